//! `nestform state list` and `nestform state show ADDR`.

use std::process::ExitCode;

use miette::Report;
use nestform_engine::workdir::Workdir;
use nestform_state::ResourceState;

use super::{addrs, report};

pub fn list(workdir: &Workdir, filters: Vec<String>) -> Result<ExitCode, Report> {
    let filters = addrs("address", &filters)?;
    let state = workdir.state().map_err(report)?;
    for addr in state.resources.keys() {
        if filters.is_empty() || filters.iter().any(|f| f.contains(addr)) {
            outln!("{addr}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(workdir: &Workdir, address: String) -> Result<ExitCode, Report> {
    let addr = addrs("address", std::slice::from_ref(&address))?.remove(0);
    let state = workdir.state().map_err(report)?;
    let Some(r) = state.resources.get(&addr) else {
        return Err(miette::miette!(
            help = "`nestform state list` shows the addresses in the state",
            "no resource `{addr}` in the state"
        ));
    };
    outln!("# {addr}{}:", if r.tainted { " (tainted)" } else { "" })?;
    out!("{}", render_attributes(r))?;
    Ok(ExitCode::SUCCESS)
}

/// The resource's id, host, level and attributes, one `name = value` per line.
pub fn render_attributes(r: &ResourceState) -> String {
    let mut s = String::new();
    if let Some(id) = &r.id {
        s.push_str(&format!("    id    = {id:?}\n"));
    }
    if let Some(host) = &r.host {
        s.push_str(&format!("    host  = {host}\n"));
    }
    s.push_str(&format!("    level = {}\n", r.level));
    if let Some(obj) = r.attributes.as_object() {
        let width = obj.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in obj {
            let v = serde_json::to_string_pretty(v).unwrap_or_default().replace('\n', "\n    ");
            s.push_str(&format!("    {k:width$} = {v}\n"));
        }
    }
    s
}
