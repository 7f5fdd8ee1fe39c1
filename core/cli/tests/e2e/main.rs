//! End-to-end tests of the `nestform` binary: one integration binary, shared helpers in `support`.
//!
//! `lifecycle` drives libvirtd's test driver (`test+unix:///default`), so libvirtd must be running
//! (`tests/setup-host.sh` starts it); everything else needs no daemon.

mod basics;
mod examples;
mod lab;
mod lifecycle;
mod schemas;
mod support;
