//! The snapshot dance against the in-memory provider: the order of stops and starts across levels,
//! offline for unsafe disks and lab guests, what is lost with a lab guest's restart, refusals.

use std::sync::Mutex;

use nestform_provider::Provider;
use nestform_provider_memory::MemoryProvider;
use nestform_state::ResourceState;
use serde_json::json;

use super::*;

fn addr(s: &str) -> ResourceAddr {
    s.parse().unwrap()
}

/// A state and a fake world: `l0` at `memory://l0`; each `(guest, host, attributes)` is created
/// running on its host; each `(kvm_host, guest)` promotes a guest and is reached at
/// `memory://<kvm_host name>`.
struct Lab {
    provider: MemoryProvider,
    state: State,
    promoted: Vec<(ResourceAddr, String)>,
}

impl Lab {
    fn new(guests: &[(&str, &str, serde_json::Value)], promoted: &[(&str, &str)]) -> Self {
        let provider = MemoryProvider::new();
        let mut state = State::new();
        let put = |state: &mut State, a: &str, id: Option<String>, host: Option<&str>, attributes| {
            let r = ResourceState {
                id,
                host: host.map(addr),
                level: 0,
                attributes,
                dependencies: Default::default(),
                tainted: false,
            };
            state.resources.insert(addr(a), r);
        };
        put(&mut state, "kvm_host.l0", Some("memory://l0".into()), None, json!({ "uri": "memory://l0" }));
        let mut lab = Lab { provider, state, promoted: Vec::new() };
        for (host, guest) in promoted {
            let uri = format!("memory://{}", addr(host).name);
            put(&mut lab.state, host, Some(uri.clone()), None, json!({ "guest": guest }));
            lab.promoted.push((addr(host), uri));
        }
        for (guest, host, attrs) in guests {
            let name = addr(guest).name;
            let h = lab.hosts().connect_recorded(&lab.state, &addr(host)).unwrap();
            let req = nestform_provider::conformance::sample_guest(&name, &[], true);
            let owner = Owner { lineage: lab.state.lineage.clone(), address: guest.to_string() };
            let id = h.create_guest(&req, &owner).unwrap().id;
            let mut attributes = json!({
                "name": name, "running": true, "vcpus": 1, "memory": "64MiB", "disks": [{ "name": "root" }]
            });
            attributes.as_object_mut().unwrap().extend(attrs.as_object().unwrap().clone());
            put(&mut lab.state, guest, Some(id), Some(host), attributes);
        }
        lab
    }

    /// A connection cache where promoted hosts are the fake's, as if promotion had happened.
    fn hosts(&self) -> Hosts {
        let hosts = Hosts::new(self.provider.backends());
        for (host, uri) in &self.promoted {
            hosts.connect_uri(host, uri).unwrap();
        }
        hosts
    }

    fn opts(&self) -> SnapshotOptions {
        let (provider, promoted) = (self.provider.clone(), self.promoted.clone());
        SnapshotOptions {
            stop_timeout: Duration::ZERO,
            agent_wait: nestform_provider::AgentWait::at_most(Duration::from_secs(10)),
            fresh_hosts: Arc::new(move || {
                let hosts = Hosts::new(provider.backends());
                for (host, uri) in &promoted {
                    hosts.connect_uri(host, uri).unwrap();
                }
                hosts
            }),
        }
    }

    fn create(&self, guest: &str, name: &str) -> (Result<SnapshotOutcome, SnapshotError>, Vec<String>) {
        self.run(guest, Action::Create(name))
    }

    /// Runs `action` and returns the finished steps as `"Step addr"`.
    fn run(&self, guest: &str, action: Action<'_>) -> (Result<SnapshotOutcome, SnapshotError>, Vec<String>) {
        let events = Mutex::new(Vec::new());
        let record = |e: SnapshotEvent| {
            if e.done.is_some() || e.step == Step::Lost {
                events.lock().unwrap().push(format!("{:?} {}", e.step, e.addr));
            }
        };
        let out = run(&self.state, &self.hosts(), &addr(guest), action, &self.opts(), &record);
        (out, events.into_inner().unwrap())
    }

    /// The fake's mutating calls other than creating the lab.
    fn calls_after(&self, skip: usize) -> Vec<String> {
        self.provider.call_log().into_iter().skip(skip).collect()
    }
}

/// `outer` (level 1) promoted as `l1` holds `mid` and `mid2`; `mid`, promoted as `l2`, holds `deep`.
fn tower(outer: serde_json::Value, inner: serde_json::Value) -> Lab {
    Lab::new(
        &[
            ("nested_guest.outer", "kvm_host.l0", outer),
            ("nested_guest.mid", "kvm_host.l1", inner.clone()),
            ("nested_guest.mid2", "kvm_host.l1", inner.clone()),
            ("nested_guest.deep", "kvm_host.l2", inner),
        ],
        &[("kvm_host.l1", "nested_guest.outer"), ("kvm_host.l2", "nested_guest.mid")],
    )
}

#[test]
fn stops_deepest_first_and_starts_shallowest_first() {
    let lab = tower(json!({}), json!({}));
    let setup = lab.provider.calls();
    let (out, events) = lab.create("nested_guest.outer", "before-upgrade");
    let out = out.unwrap();
    assert_eq!(out.mode, SnapshotMode::Live, "{}", out.reason);
    assert!(out.snapshot.running && out.lost.is_empty(), "{out:?}");
    assert_eq!(
        lab.calls_after(setup),
        [
            "stop_guest deep",
            "stop_guest mid",
            "stop_guest mid2",
            "create_snapshot outer",
            "start_guest mid",
            "start_guest mid2",
            "start_guest deep"
        ]
    );
    assert_eq!(events[3], "Snapshot(Live) nested_guest.outer");
    assert_eq!(events[4], "Start nested_guest.mid");
    assert!(events.contains(&"StartLibvirt kvm_host.l2".to_string()), "{events:?}");
    let owner = lab
        .provider
        .connect("memory://l0")
        .unwrap()
        .list_snapshots(&lab.state.resources[&addr("nested_guest.outer")].id.clone().unwrap())
        .unwrap();
    assert_eq!(owner[0].owner.as_ref().map(|o| o.address.as_str()), Some("nested_guest.outer"));
}

#[test]
fn unsafe_disks_are_snapshotted_after_a_clean_shutdown() {
    let disks = json!({ "disks": [{ "name": "root" }, { "name": "data", "cache": "unsafe" }] });
    let lab = Lab::new(&[("nested_guest.g", "kvm_host.l0", disks)], &[]);
    let setup = lab.provider.calls();
    let (out, _) = lab.create("nested_guest.g", "s1");
    let out = out.unwrap();
    assert_eq!(out.mode, SnapshotMode::Offline);
    assert!(out.reason.contains("`data`") && !out.reason.contains("`root`"), "{}", out.reason);
    assert!(!out.snapshot.running);
    assert_eq!(lab.calls_after(setup), ["stop_guest g", "create_snapshot g", "start_guest g"]);
    assert_eq!(out.state.resources[&addr("nested_guest.g")].attributes["running"], json!(true));
}

#[test]
fn a_lab_guest_goes_offline_and_its_guests_are_reported_lost() {
    let lab_install = json!({ "install": { "lab": {} } });
    let mut lab = tower(lab_install.clone(), lab_install);
    let net = ResourceState {
        id: Some("n".into()),
        host: Some(addr("kvm_host.l1")),
        level: 2,
        attributes: json!({}),
        dependencies: Default::default(),
        tainted: false,
    };
    lab.state.resources.insert(addr("nat_network.inner"), net);
    let setup = lab.provider.calls();
    let (out, events) = lab.create("nested_guest.outer", "s1");
    let out = out.unwrap();
    assert_eq!(out.mode, SnapshotMode::Offline);
    assert!(out.reason.contains("9p"), "{}", out.reason);
    assert_eq!(
        lab.calls_after(setup),
        [
            "stop_guest deep",
            "stop_guest mid",
            "stop_guest mid2",
            "stop_guest outer",
            "create_snapshot outer",
            "start_guest outer"
        ]
    );
    let lost: Vec<String> = out.lost.iter().map(|a| a.to_string()).collect();
    assert_eq!(lost, ["nested_guest.mid", "nested_guest.mid2", "nested_guest.deep", "nat_network.inner"]);
    assert!(events.contains(&"StartLibvirt kvm_host.l1".to_string()), "{events:?}");
    let attrs = &out.state.resources[&addr("nested_guest.outer")].attributes;
    assert!(attrs.get("kernel").is_some(), "the agent's facts are recorded: {attrs}");
}

#[test]
fn revert_brings_back_the_definition_and_refreshes_state() {
    let disks = json!({ "disks": [{ "name": "data", "cache": "unsafe" }] });
    let lab = Lab::new(&[("nested_guest.g", "kvm_host.l0", disks)], &[]);
    lab.create("nested_guest.g", "s1").0.unwrap();
    assert!(lab.provider.edit_guest("l0", "g", |g| g.vcpus = 7));
    let setup = lab.provider.calls();
    let (out, _) = lab.run("nested_guest.g", Action::Revert("s1"));
    let out = out.unwrap();
    assert_eq!(out.mode, SnapshotMode::Offline);
    assert_eq!(lab.calls_after(setup), ["stop_guest g", "revert_snapshot g", "start_guest g"]);
    let attrs = &out.state.resources[&addr("nested_guest.g")].attributes;
    assert_eq!((&attrs["vcpus"], &attrs["running"]), (&json!(1), &json!(true)));
}

#[test]
fn refusals_change_nothing() {
    let raw = json!({ "disks": [{ "name": "root" }, { "name": "scratch", "format": "raw" }] });
    let lab = Lab::new(
        &[
            ("nested_guest.g", "kvm_host.l0", json!({})),
            ("nested_guest.bare", "kvm_host.l0", json!({ "disks": [] })),
            ("nested_guest.raw", "kvm_host.l0", raw),
        ],
        &[],
    );
    lab.create("nested_guest.g", "s1").0.unwrap();
    let setup = lab.provider.calls();
    let err = |guest: &str, action| lab.run(guest, action).0.unwrap_err().to_string();
    let text = err("kvm_host.l0", Action::Create("s2"));
    assert!(text.contains("is not a guest"), "{text}");
    let text = err("nested_guest.nope", Action::Create("s2"));
    assert!(text.contains("no guest `nested_guest.nope` in the state"), "{text}");
    let text = err("nested_guest.g", Action::Create("bad/name"));
    assert!(text.contains("`bad/name` is not a valid snapshot name"), "{text}");
    let text = err("nested_guest.g", Action::Create("s1"));
    assert!(text.contains("already has a snapshot `s1`") && text.contains("snapshot delete"), "{text}");
    let text = err("nested_guest.bare", Action::Create("s1"));
    assert!(text.contains("`nested_guest.bare` cannot be snapshotted: it has no disks"), "{text}");
    let text = err("nested_guest.raw", Action::Create("s1"));
    assert!(text.contains("disk `scratch` is raw"), "{text}");
    let text = err("nested_guest.g", Action::Revert("s9"));
    assert_eq!(text, "`nested_guest.g` has no snapshot `s9`; it has `s1`");
    let hosts = lab.hosts();
    let text = delete(&lab.state, &hosts, &addr("nested_guest.g"), "s9").unwrap_err().to_string();
    assert!(text.contains("no snapshot `s9`"), "{text}");
    assert_eq!(lab.calls_after(setup), Vec::<String>::new(), "a refusal must change nothing");
    delete(&lab.state, &hosts, &addr("nested_guest.g"), "s1").unwrap();
    assert_eq!(list(&lab.state, &hosts, &addr("nested_guest.g")).unwrap(), vec![]);
}

#[test]
fn names_are_checked() {
    for ok in ["s1", "before-upgrade", "2026.11.26_a"] {
        validate_name(ok).unwrap();
    }
    for bad in ["", "-x", ".x", "a b", "a/b", &"x".repeat(65)] {
        assert!(validate_name(bad).is_err(), "`{bad}` was accepted");
    }
}

#[test]
fn a_failed_snapshot_still_starts_what_it_stopped() {
    let disks = json!({ "disks": [{ "name": "data", "cache": "unsafe" }] });
    let lab = tower(disks, json!({}));
    lab.provider.fail_on("create_snapshot", "outer");
    let setup = lab.provider.calls();
    let err = lab.create("nested_guest.outer", "s1").0.unwrap_err().to_string();
    assert!(err.starts_with("snapshotting `nested_guest.outer` failed"), "{err}");
    assert!(err.contains("injected failure") && !err.contains("still stopped"), "{err}");
    let calls = lab.calls_after(setup);
    assert_eq!(calls[3..6], ["stop_guest outer", "create_snapshot outer", "start_guest outer"], "{calls:?}");
    assert_eq!(calls[6..], ["start_guest mid", "start_guest mid2", "start_guest deep"], "{calls:?}");
}
