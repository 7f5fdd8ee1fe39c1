//! The nestform language: loads *.nf.hcl files, evaluates them, and reports problems with source locations
