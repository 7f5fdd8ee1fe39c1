//! Bounds on what a configuration may ask for, so a mistyped number (`count = 1e9`) or a runaway
//! expression is a diagnostic at plan time, not an out-of-memory abort or an hour of evaluation.
//!
//! The limits are far above what a lab of nested guests needs and far below what would exhaust
//! the machine that plans it.

/// The most instances one block may have through `count` or `for_each`: a lab of nested guests
/// has tens of them, and each instance is a libvirt object on some host.
pub(crate) const MAX_INSTANCES: u64 = 1000;
