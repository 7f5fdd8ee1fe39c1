//! The nestform engine: configuration -> graph -> plan -> apply -> state.
//!
//! - [`plan`]: the `Plan` type (what a plan file holds and `show -json` prints).
//! - [`computed`]: the attributes apply computes per resource type, which plans list as known after
//!   apply.
//! - `graph`: one dependency graph across every nesting level, with the implicit nesting edges.
//! - `planner`: compares configuration, refreshed state and host facts, classifies each changed
//!   attribute, and expands cascades across levels.
//! - `render`: the human plan (attribute changes, domain XML diffs, summary) and Terraform-shaped JSON.
//! - `refresh` (which changes nothing anywhere) and `apply`: talk to hosts through
//!   `nestform_provider`, never naming a backend.
//! - [`hosts`]: the connection cache across levels, over the [`Backends`](nestform_provider::Backends)
//!   the CLI composes; promoted hosts are reached through its `Guests`, as they are (refresh) or
//!   started (apply). [`agent`]: a booted guest's agent and the attributes its facts give.
//! - [`request`]: specs as provider requests; [`kvm`]: `kvm_module_options` against host facts.
//! - [`snapshot`]: snapshots and reverts of a guest, stopping the guests inside it first.
//! - [`session`]: one whole apply as the CLI runs it: Ctrl-C, state saved after each operation,
//!   outputs, the last save.
//! - [`guest`]: `exec`, `cp` and `console` in a guest recorded in state, at any level.
//! - [`workdir`]: the steps every command shares (configuration, lock, state, plan files).
//!
//! The engine depends on `core/*` only: it names no backend, and its tests use the memory
//! provider's.

pub mod agent;
pub mod apply;
pub mod computed;
pub mod graph;
pub mod guest;
pub mod hosts;
pub mod kvm;
pub mod plan;
pub mod planner;
pub mod refresh;
pub mod render;
pub mod request;
pub mod session;
pub mod snapshot;
pub mod workdir;
