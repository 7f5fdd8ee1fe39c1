//! Output changes: each output evaluated with the planned values of the resources (attributes known
//! only after apply left out, so outputs that read them are unknown), compared with state.

use std::collections::{BTreeMap, HashMap, HashSet};

use nestform_config::{Config, Diagnostics, OutputValue};
use nestform_state::State;
use nestform_types::ResourceAddr;
use serde_json::Value;

use crate::plan::{Action, OutputChange, ResourceChange};

/// What each output becomes.
pub(crate) fn plan_outputs(
    config: &Config,
    state: &State,
    changes: &[ResourceChange],
    destroy: bool,
) -> Result<BTreeMap<String, OutputChange>, Diagnostics> {
    let mut out = BTreeMap::new();
    let deleted = |value: &Value, sensitive: bool| OutputChange {
        action: Action::Delete,
        before: Some(value.clone()),
        after: None,
        after_unknown: false,
        sensitive,
    };
    if destroy {
        for (name, o) in &state.outputs {
            out.insert(name.clone(), deleted(&o.value, o.sensitive));
        }
        return Ok(out);
    }
    // Only what the outputs refer to: converting every resource for evaluation would cost more than
    // the whole rest of a plan of thousands of guests.
    let referenced: HashSet<&ResourceAddr> = config.outputs.values().flat_map(|o| &o.depends_on).collect();
    let planned: HashMap<&ResourceAddr, &ResourceChange> =
        changes.iter().filter(|c| referenced.contains(&c.addr)).map(|c| (&c.addr, c)).collect();
    let mut values = BTreeMap::new();
    for addr in referenced.into_iter().filter(|a| config.resources.contains_key(*a)) {
        // A resource left out by `-target` keeps what state says.
        let value = match planned.get(addr) {
            Some(c) => c.after.clone(),
            None => state.resources.get(addr).map(|s| s.attributes.clone()),
        };
        if let Some(v) = value {
            values.insert(addr.clone(), v);
        }
    }
    let evaluated =
        if config.outputs.is_empty() { BTreeMap::new() } else { config.evaluate_outputs(&values)? };
    for (name, oc) in &config.outputs {
        // An output that reads a resource `-target` left out and that never existed cannot get a
        // value from this plan: it is left as it is, like Terraform does, rather than shown as a
        // change no apply of this target set could ever make.
        if oc.depends_on.iter().any(|a| config.resources.contains_key(a) && !values.contains_key(a)) {
            continue;
        }
        let before = state.outputs.get(name).map(|o| o.value.clone());
        let (after, after_unknown) = match evaluated.get(name) {
            Some(OutputValue::Known(v)) => (Some(v.clone()), false),
            Some(OutputValue::Unknown) | None => (None, true),
        };
        let action = match (&before, &after) {
            (None, _) => Action::Create,
            (Some(b), Some(a)) if b == a => Action::NoOp,
            _ => Action::Update,
        };
        out.insert(
            name.clone(),
            OutputChange { action, before, after, after_unknown, sensitive: oc.sensitive },
        );
    }
    for (name, o) in &state.outputs {
        if !config.outputs.contains_key(name) {
            out.insert(name.clone(), deleted(&o.value, o.sensitive));
        }
    }
    Ok(out)
}
