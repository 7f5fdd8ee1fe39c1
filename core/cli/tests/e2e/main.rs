//! End-to-end tests of the `nestform` binary: one integration binary, shared helpers in `support`.
//!
//! `lifecycle` drives libvirtd's test driver (`test+unix:///default`), so libvirtd must be running
//! (`tests/setup-host.sh` starts it); `killed` kills applies half-way there too; `snapshot` snapshots
//! guests there and one real lab guest on `qemu:///system` (like `lab`); everything else needs no daemon.

mod basics;
mod benchmarks;
mod examples;
mod fault;
mod killed;
mod lab;
mod lifecycle;
mod nesting;
mod promoted;
mod schemas;
mod snapshot;
mod support;
