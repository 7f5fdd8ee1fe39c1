//! `nestform output`: output values recorded by the last apply.

use std::collections::BTreeMap;
use std::process::ExitCode;

use miette::Report;
use nestform_engine::workdir::Workdir;
use nestform_state::OutputState;

use super::report;
use crate::args::OutputArgs;

pub fn run(workdir: &Workdir, args: OutputArgs) -> Result<ExitCode, Report> {
    let state = workdir.state().map_err(report)?;
    let Some(name) = &args.name else {
        if args.json {
            let all: BTreeMap<_, _> = state
                .outputs
                .iter()
                .map(|(k, o)| (k, serde_json::json!({ "sensitive": o.sensitive, "value": o.value })))
                .collect();
            super::write_json(&all)?;
        } else if state.outputs.is_empty() {
            eprintln!("No outputs found. Add `output` blocks to the configuration and apply it.");
        } else {
            out!("{}", render_outputs(&state.outputs))?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    let Some(out) = state.outputs.get(name) else {
        let known: Vec<_> = state.outputs.keys().map(|k| format!("`{k}`")).collect();
        return Err(miette::miette!(
            help = if known.is_empty() {
                "apply a configuration with `output` blocks first".to_string()
            } else {
                format!("outputs in the state: {}", known.join(", "))
            },
            "no output `{name}` in the state"
        ));
    };
    match (&out.value, args.raw, args.json) {
        (serde_json::Value::String(s), true, _) => outln!("{s}")?,
        (v, _, true) => super::write_json(v)?,
        (v, _, false) => outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `name = value` lines, sensitive values hidden.
pub fn render_outputs(outputs: &BTreeMap<String, OutputState>) -> String {
    let mut s = String::new();
    for (name, o) in outputs {
        let value = if o.sensitive {
            "(sensitive value)".to_string()
        } else {
            serde_json::to_string_pretty(&o.value).unwrap_or_default()
        };
        s.push_str(&format!("{name} = {value}\n"));
    }
    s
}
