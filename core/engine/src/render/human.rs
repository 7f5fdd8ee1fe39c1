//! The human plan, in Terraform's layout: a header per changed resource saying what will happen and
//! where (level, host), the attribute changes with `before -> after` and, for each, the effect and why,
//! a unified diff of the domain XML for guests, and the summary line.

use std::fmt::Write as _;

use nestform_types::ResourceType;
use serde_json::Value;

use crate::plan::{Action, AttributeChange, ChangeReason, Effect, OutputChange, Plan, ResourceChange};

/// The whole plan as text, ending with the summary line.
pub fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    render_hosts(&mut out, plan);
    if plan.is_empty() {
        out.push_str("No changes. Your infrastructure matches the configuration.\n");
        return out;
    }
    let changed: Vec<&ResourceChange> = plan.changes.iter().filter(|c| c.action != Action::NoOp).collect();
    if !changed.is_empty() {
        out.push_str("nestform will perform the following actions:\n");
        for c in changed {
            out.push('\n');
            let accel = c.host.as_ref().and_then(|h| plan.hosts.get(h)?.acceleration.as_deref());
            render_change(&mut out, c, accel.filter(|_| c.addr.ty == ResourceType::NestedGuest));
        }
        out.push('\n');
    }
    let (add, change, replace, destroy) = plan.counts();
    let _ =
        writeln!(out, "Plan: {add} to add, {change} to change, {replace} to replace, {destroy} to destroy.");
    let outputs: Vec<(&String, &OutputChange)> =
        plan.output_changes.iter().filter(|(_, o)| o.action != Action::NoOp).collect();
    if !outputs.is_empty() {
        out.push_str("\nChanges to Outputs:\n");
        let width = outputs.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, o) in outputs {
            render_output(&mut out, name, o, width);
        }
    }
    out
}

fn symbol(c: &ResourceChange) -> &'static str {
    match c.action {
        Action::NoOp => " ",
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
    }
}

fn headline(c: &ResourceChange) -> &'static str {
    match c.action {
        Action::NoOp => "has no changes",
        Action::Create => "will be created",
        Action::Update if c.restart && c.attribute_changes.is_empty() => {
            "will be shut down and started again"
        }
        Action::Update if c.restart => "will be updated in place, with a restart",
        Action::Update => "will be updated in place",
        Action::Replace => "must be replaced",
        Action::Delete => "will be destroyed",
    }
}

/// What refresh learned of each host: versions, CPU, and how its guests run and why.
fn render_hosts(out: &mut String, plan: &Plan) {
    if plan.hosts.is_empty() {
        return;
    }
    out.push_str("Hosts:\n");
    for (addr, f) in &plan.hosts {
        let vendor = f.cpu_vendor.as_deref().map(|v| format!(", {v}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {addr}: {} (libvirt {}){vendor}, {} CPUs, {:.1} GiB",
            f.hypervisor,
            f.libvirt_version,
            f.cpus,
            f.memory_bytes as f64 / (1u64 << 30) as f64
        );
        if let Some(source) = &f.memory_source {
            let _ = writeln!(out, "    memory: {source}");
        }
        if let Some(accel) = &f.acceleration {
            let why = f.acceleration_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            let _ = writeln!(out, "    guests run under {}{why}", accel.to_uppercase());
        }
        match (&f.kvm_module, f.nesting) {
            (Some(m), nesting) => {
                let nested =
                    f.kvm_parameters.get("nested").map(|v| format!(" nested={v}")).unwrap_or_default();
                let n = match nesting {
                    Some(true) => ", guests can nest",
                    Some(false) => ", guests cannot nest",
                    None => "",
                };
                let _ = writeln!(out, "    KVM module {m}{nested}{n}");
            }
            (None, Some(true)) => out.push_str("    no KVM module; emulated guests can still nest (svm)\n"),
            (None, _) => {}
        }
    }
    out.push('\n');
}

fn render_change(out: &mut String, c: &ResourceChange, accel: Option<&str>) {
    // A promoted host names the guest it runs in, read from its own `guest` attribute.
    let promoted = [&c.after, &c.before]
        .into_iter()
        .find_map(|v| v.as_ref()?.get("guest")?.as_str().map(String::from))
        .filter(|_| c.addr.ty == ResourceType::KvmHost);
    let place = match (&c.host, promoted) {
        (Some(h), _) if accel.is_some() => {
            format!("level {}, on {h}, {}", c.level, accel.unwrap_or_default().to_uppercase())
        }
        (Some(h), _) => format!("level {}, on {h}", c.level),
        (None, Some(g)) => format!("level {}, inside {g}", c.level),
        (None, None) => format!("level {}", c.level),
    };
    let _ = writeln!(out, "  # {} {} ({place})", c.addr, headline(c));
    for r in &c.reasons {
        let _ = writeln!(out, "  # ({})", reason(c.action, c.addr.ty, r));
    }
    let sym = symbol(c);
    let _ = writeln!(out, "{}{sym} {} {{", " ".repeat(3 - sym.len()), c.addr);
    match c.action {
        Action::Create => {
            let after = object(c.after.as_ref());
            let mut rows: Vec<(String, String, String)> =
                after.iter().map(|(k, v)| ("+".into(), k.clone(), value(v))).collect();
            rows.extend(
                c.after_unknown.iter().map(|k| ("+".into(), k.clone(), "(known after apply)".into())),
            );
            rows_out(out, rows, &[]);
        }
        Action::Delete => {
            let before = object(c.before.as_ref());
            let rows = before.iter().map(|(k, v)| ("-".into(), k.clone(), format!("{} -> null", value(v))));
            rows_out(out, rows.collect(), &[]);
        }
        Action::Update | Action::Replace | Action::NoOp => {
            let mut rows = Vec::new();
            let mut notes = Vec::new();
            for a in &c.attribute_changes {
                rows.push(attribute_row(a));
                notes.push(Some(format!("# {}: {}", effect_word(a.effect), a.why)));
            }
            if c.action == Action::Replace {
                let before = object(c.before.as_ref());
                for k in &c.after_unknown {
                    let b = before.get(k).map(value).unwrap_or_else(|| "null".into());
                    rows.push(("~".into(), k.clone(), format!("{b} -> (known after apply)")));
                    notes.push(None);
                }
            }
            let notes: Vec<Option<String>> = notes;
            rows_out(out, rows, &notes);
            let (before, after) = (object(c.before.as_ref()), object(c.after.as_ref()));
            let hidden = after
                .iter()
                .filter(|(k, v)| before.get(*k) == Some(*v) && !c.after_unknown.contains(*k))
                .count();
            if hidden > 0 && c.action != Action::NoOp {
                let s = if hidden == 1 { "" } else { "s" };
                let _ = writeln!(out, "        # ({hidden} unchanged attribute{s} hidden)");
            }
        }
    }
    if let (Some(b), Some(a)) = (&c.definition_before, &c.definition_after) {
        if b != a {
            render_xml_diff(out, b, a);
        }
    }
    out.push_str("    }\n");
}

fn attribute_row(a: &AttributeChange) -> (String, String, String) {
    let after = || match &a.after {
        Some(v) => value(v),
        None if a.after_unknown => "(known after apply)".into(),
        None => "null".into(),
    };
    match (&a.before, &a.after) {
        (None, _) => ("+".into(), a.path.clone(), after()),
        (Some(b), None) if !a.after_unknown => ("-".into(), a.path.clone(), format!("{} -> null", value(b))),
        (Some(b), _) => ("~".into(), a.path.clone(), format!("{} -> {}", value(b), after())),
    }
}

/// Attribute rows with names aligned, as Terraform does, and an optional note after each.
fn rows_out(out: &mut String, rows: Vec<(String, String, String)>, notes: &[Option<String>]) {
    let width = rows.iter().map(|(_, k, _)| k.len()).max().unwrap_or(0);
    for (i, (sym, key, val)) in rows.iter().enumerate() {
        let _ = write!(out, "      {sym} {key:<width$} = {val}");
        if let Some(Some(note)) = notes.get(i) {
            let _ = write!(out, "   {note}");
        }
        out.push('\n');
    }
}

fn render_xml_diff(out: &mut String, before: &str, after: &str) {
    let diff = similar::TextDiff::from_lines(before, after);
    let unified =
        diff.unified_diff().context_radius(2).header("domain XML before", "domain XML after").to_string();
    out.push('\n');
    for line in unified.lines() {
        let _ = writeln!(out, "        {line}");
    }
}

fn render_output(out: &mut String, name: &str, o: &OutputChange, width: usize) {
    let after = match (&o.after, o.after_unknown, o.sensitive) {
        (_, _, true) => "(sensitive value)".to_string(),
        (_, true, _) => "(known after apply)".to_string(),
        (Some(v), ..) => value(v),
        (None, ..) => "null".to_string(),
    };
    let before = match (&o.before, o.sensitive) {
        (_, true) => "(sensitive value)".to_string(),
        (Some(v), _) => value(v),
        (None, _) => "null".to_string(),
    };
    let (sym, text) = match o.action {
        Action::Create => ("+", after),
        Action::Delete => ("-", format!("{before} -> null")),
        _ => ("~", format!("{before} -> {after}")),
    };
    let _ = writeln!(out, "  {sym} {name:<width$} = {text}");
}

fn reason(action: Action, ty: ResourceType, r: &ChangeReason) -> String {
    match r {
        // A benchmark's cascade comes from a target it measures, not from a guest it runs inside.
        ChangeReason::Cascade { guest } if ty == ResourceType::Benchmark => {
            format!("because `{guest}`, which it measures, is replaced: its results are about a machine that is gone")
        }
        ChangeReason::Cascade { guest } => {
            let what = match action {
                Action::Delete => "is destroyed",
                Action::Replace => "is replaced",
                Action::Create => "no longer exists and is created again",
                _ => "restarts",
            };
            format!("because `{guest}`, which it runs inside, {what}")
        }
        ChangeReason::Tainted => "because it is tainted: it was created but never became healthy".into(),
        ChangeReason::ReplaceRequested => "because `-replace` names it".into(),
        // The detail says what happened outside nestform: "it was stopped outside nestform".
        ChangeReason::Drift { detail } => format!("because {detail}"),
        ChangeReason::NotInConfig => "because it is not in the configuration".into(),
        ChangeReason::Orphan => {
            "because it was found on its host but is missing from the state: an interrupted apply left it"
                .into()
        }
    }
}

fn effect_word(e: Effect) -> &'static str {
    match e {
        Effect::Live => "live",
        Effect::Restart => "restart",
        Effect::Replace => "forces replacement",
    }
}

fn object(v: Option<&Value>) -> serde_json::Map<String, Value> {
    match v {
        Some(Value::Object(m)) => m.clone(),
        _ => serde_json::Map::new(),
    }
}

/// One value as the plan shows it: strings quoted, everything else as compact JSON.
fn value(v: &Value) -> String {
    v.to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nestform_state::State;
    use nestform_types::{ByteSize, DiskFormat};
    use serde_json::json;

    use super::*;
    use crate::planner::tests::{plan_of, run_with, three_levels, xml_hypervisors, Conf};
    use crate::planner::PlanOptions;

    fn small() -> Conf {
        Conf::default().host("l0").network("lan", "kvm_host.l0").guest("g1", "kvm_host.l0")
    }

    fn render(conf: &Conf, state: &State, options: PlanOptions) -> String {
        let (changes, _) = run_with(conf, state, &BTreeMap::new(), &xml_hypervisors(), options).unwrap();
        render_plan(&plan_of(changes))
    }

    #[test]
    fn hosts_and_each_guests_acceleration_are_shown() {
        let (changes, _) =
            run_with(&small(), &State::new(), &BTreeMap::new(), &xml_hypervisors(), PlanOptions::default())
                .unwrap();
        let mut plan = plan_of(changes);
        let facts = nestform_provider::HostFacts {
            hostname: "h".into(),
            cpus: 2,
            memory_bytes: 12 << 30,
            cpu_vendor: Some("AuthenticAMD".into()),
            libvirt_version: "11.3.0".into(),
            hypervisor: "QEMU 10.0.2".into(),
            nesting: Some(true),
            acceleration: Some("tcg".into()),
            acceleration_reason: Some("`/dev/kvm` belongs to PVM".into()),
            ..Default::default()
        };
        plan.hosts.insert("kvm_host.l0".parse().unwrap(), facts);
        let text = render_plan(&plan);
        assert!(
            text.starts_with(
                "Hosts:\n  kvm_host.l0: QEMU 10.0.2 (libvirt 11.3.0), AuthenticAMD, 2 CPUs, 12.0 GiB\n"
            ),
            "{text}"
        );
        assert!(text.contains("    guests run under TCG: `/dev/kvm` belongs to PVM\n"), "{text}");
        assert!(text.contains("    no KVM module; emulated guests can still nest (svm)\n"), "{text}");
        assert!(text.contains("# nested_guest.g1 will be created (level 1, on kvm_host.l0, TCG)"), "{text}");
        // The network on the same host is not a guest: no acceleration in its line.
        assert!(text.contains("# nat_network.lan will be created (level 0, on kvm_host.l0)\n"), "{text}");
    }

    #[test]
    fn create_from_empty() {
        insta::assert_snapshot!(render(&small(), &State::new(), PlanOptions::default()));
    }

    #[test]
    fn no_changes() {
        let conf = small();
        let out = render(&conf, &conf.applied(), PlanOptions::default());
        assert_eq!(out, "No changes. Your infrastructure matches the configuration.\n");
    }

    #[test]
    fn restart_with_cascade_and_domain_diff() {
        let conf = three_levels();
        let state = conf.applied();
        let conf = conf.edit_guest("g1", |g| g.memory = ByteSize::gib(1));
        let out = render(&conf, &state, PlanOptions::default());
        assert!(out.contains(
            "~ memory = \"512MiB\" -> \"1GiB\"   # restart: libvirt cannot change the memory of a running domain"
        ));
        insta::assert_snapshot!(out);
    }

    #[test]
    fn replace_and_delete() {
        let conf = three_levels();
        let state = conf.applied();
        let conf = conf
            .edit_guest("g2", |g| g.disks[0].format = DiskFormat::Raw)
            .without("kvm_host.l2")
            .without("nested_guest.g3");
        insta::assert_snapshot!(render(&conf, &state, PlanOptions::default()));
    }

    /// The XML diff as the real libvirt provider writes it, through libvirt's in-process test driver.
    #[test]
    fn domain_diff_from_the_libvirt_provider() {
        use nestform_provider::Provider;
        let hv = nestform_provider_libvirt::LibvirtProvider::new().connect("test:///default").unwrap();
        let hypervisors = [(crate::planner::tests::addr("kvm_host.l0"), hv)].into();
        let conf = small();
        let state = conf.applied();
        let conf = conf.edit_guest("g1", |g| {
            g.memory = ByteSize::gib(1);
            g.vcpus = 2;
        });
        let (changes, _) =
            run_with(&conf, &state, &BTreeMap::new(), &hypervisors, PlanOptions::default()).unwrap();
        let out = render_plan(&plan_of(changes));
        assert!(out.contains("--- domain XML before\n        +++ domain XML after\n"), "{out}");
        let removed: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with("-  ")).collect();
        let added: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with("+  ")).collect();
        assert!(removed.iter().any(|l| l.contains("524288")), "{out}");
        assert!(added.iter().any(|l| l.contains("1048576")), "{out}");
        assert!(added.iter().any(|l| l.contains(">2</vcpu>")), "{out}");
        assert!(out.contains("Plan: 0 to add, 1 to change, 0 to replace, 0 to destroy."));
    }

    #[test]
    fn outputs_are_listed_after_the_summary() {
        let mut plan = plan_of(Vec::new());
        plan.output_changes.insert(
            "ip".into(),
            OutputChange {
                action: Action::Create,
                before: None,
                after: None,
                after_unknown: true,
                sensitive: false,
            },
        );
        plan.output_changes.insert(
            "name".into(),
            OutputChange {
                action: Action::Update,
                before: Some(json!("a")),
                after: Some(json!("b")),
                after_unknown: false,
                sensitive: false,
            },
        );
        insta::assert_snapshot!(render_plan(&plan), @r#"
        Plan: 0 to add, 0 to change, 0 to replace, 0 to destroy.

        Changes to Outputs:
          + ip   = (known after apply)
          ~ name = "a" -> "b"
        "#);
    }
}
