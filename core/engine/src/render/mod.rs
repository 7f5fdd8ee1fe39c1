//! Plans for people and for programs.
//!
//! - [`human`]: the Terraform-like text `nestform plan` prints: each changed resource with its symbol,
//!   level and host, each attribute change with its effect and why, the domain XML diff, the summary.
//! - [`json`]: `nestform show -json`, in the shape of Terraform's JSON plan representation (format
//!   `1.2`) so existing tools read it, with a `nestform` field per change for levels and effects.

pub mod human;
pub mod json;

pub use human::render_plan;
pub use json::{plan_json, plan_json_schema, JsonPlan};
