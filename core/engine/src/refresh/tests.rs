//! Unit tests for refresh: reading back what each host holds, promoted hosts and orphans.

use std::collections::BTreeSet;

use nestform_provider_memory::MemoryProvider;
use nestform_state::ResourceState;
use serde_json::json;

use super::*;

/// The URI of the level-0 host `world` makes.
const L0_URI: &str = "memory://l0";
/// That host's name in the memory provider (the `NAME` of `memory://NAME`).
const L0: &str = "l0";

fn addr(s: &str) -> ResourceAddr {
    s.parse().unwrap()
}

/// A guest recorded with the libvirt name `name` (what promoting it reaches it by).
fn guest_state(name: &str, id: &str, host: &str) -> ResourceState {
    ResourceState {
        id: Some(id.into()),
        host: Some(addr(host)),
        level: 1,
        attributes: json!({ "name": name, "vcpus": 1, "memory": "512MiB", "running": true }),
        dependencies: BTreeSet::from([addr(host)]),
        tainted: false,
    }
}

fn host_state(uri: &str) -> ResourceState {
    ResourceState {
        id: Some(uri.into()),
        host: None,
        level: 0,
        attributes: json!({ "uri": uri, "nested": false }),
        dependencies: BTreeSet::new(),
        tainted: false,
    }
}

/// Creates `n` guests on the memory provider's host `l0` directly and records them in a state. The
/// host is sized as a small machine (8 CPUs, 16 GiB), not the provider's default.
fn world(n: usize) -> (MemoryProvider, Hosts, State) {
    let provider = MemoryProvider::new().with_host(L0, 8, 16 << 30);
    let hosts = Hosts::new(provider.backends());
    let mut state = State::new();
    state.resources.insert(addr("kvm_host.l0"), host_state(L0_URI));
    let h = hosts.connect_uri(&addr("kvm_host.l0"), L0_URI).unwrap();
    for i in 0..n {
        let spec = nestform_types::NestedGuestSpec {
            host: addr("kvm_host.l0"),
            name: format!("g{i}"),
            vcpus: 1,
            memory: ByteSize::mib(512),
            cpu: "host-passthrough".into(),
            disks: vec![],
            networks: vec![],
            running: true,
            install: None,
        };
        let owner = nestform_types::Owner { lineage: state.lineage.clone(), address: format!("g{i}") };
        let st = h.create_guest(&crate::request::guest_request(&spec, |_| None), &owner).unwrap();
        let recorded = guest_state(&spec.name, &st.id, "kvm_host.l0");
        state.resources.insert(addr(&format!("nested_guest.g{i}")), recorded);
    }
    (provider, hosts, state)
}

#[test]
fn gone_guest_is_removed_and_drift_is_recorded() {
    let (provider, hosts, state) = world(3);
    assert!(provider.forget_guest(L0, "g0"));
    assert!(provider.edit_guest(L0, "g1", |g| {
        g.running = false;
        g.memory_bytes = 1 << 30;
    }));
    let r = refresh_hosts(&BTreeMap::new(), &state, &hosts);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(!r.state.resources.contains_key(&addr("nested_guest.g0")));
    let g1 = &r.state.resources[&addr("nested_guest.g1")].attributes;
    assert_eq!(g1["running"], false);
    assert_eq!(g1["memory"], "1GiB");
    assert_eq!(r.state.resources[&addr("nested_guest.g2")], state.resources[&addr("nested_guest.g2")]);
    assert_eq!(r.state.resources[&addr("kvm_host.l0")].attributes["facts"]["cpus"], 8);
    // What the memory provider reports as its hypervisor (the workspace shares one version).
    assert_eq!(r.facts[&addr("kvm_host.l0")].hypervisor, format!("Memory {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn unreachable_host_keeps_its_resources_and_warns() {
    let (provider, _, state) = world(2);
    provider.fail_on("connect", L0_URI);
    let hosts = Hosts::new(provider.backends());
    let r = refresh_hosts(&BTreeMap::new(), &state, &hosts);
    assert_eq!(r.state, state);
    assert!(r.facts.is_empty());
    assert!(r.warnings.iter().any(|w| w.contains("cannot reach `kvm_host.l0`")), "{:?}", r.warnings);
}

#[test]
fn configured_host_not_in_state_gets_facts() {
    let provider = MemoryProvider::new();
    let hosts = Hosts::new(provider.backends());
    let configured = BTreeMap::from([(
        addr("kvm_host.new"),
        KvmHostSpec {
            uri: Some("memory://new".into()),
            guest: None,
            nested: true,
            kvm_module_options: BTreeMap::new(),
        },
    )]);
    let r = refresh_hosts(&configured, &State::new(), &hosts);
    assert_eq!(r.facts.keys().collect::<Vec<_>>(), vec![&addr("kvm_host.new")]);
    assert!(r.state.resources.is_empty());
}

#[test]
fn reads_hosts_from_a_configuration() {
    let file = std::sync::Arc::new(nestform_config::SourceFile::new("main.nf.hcl", ""));
    let range = nestform_config::SourceRange::new(&file, 0..0);
    let mut config = nestform_config::Config::default();
    let host = KvmHostSpec {
        uri: Some("memory://cfg".into()),
        guest: None,
        nested: false,
        kvm_module_options: BTreeMap::new(),
    };
    let rc = nestform_config::ResourceConfig {
        addr: addr("kvm_host.cfg"),
        spec: ResourceSpec::KvmHost(host),
        range,
        attr_ranges: BTreeMap::new(),
        depends_on: BTreeSet::new(),
        timeouts: Default::default(),
    };
    config.resources.insert(addr("kvm_host.cfg"), rc);
    let hosts = Hosts::new(MemoryProvider::new().backends());
    let r = refresh(Some(&config), &State::new(), &hosts);
    assert!(r.facts.contains_key(&addr("kvm_host.cfg")), "{:?}", r.warnings);
    assert_eq!(hosts.get(&addr("kvm_host.cfg")).unwrap().uri(), "memory://cfg");
    assert!(refresh(None, &State::new(), &hosts).facts.is_empty());
}

#[test]
fn promoted_host_resources_are_kept_with_a_warning() {
    let (provider, hosts, mut state) = world(1);
    // The memory provider can promote a running guest; this test is about a promoted host that
    // cannot be reached, so promoting `g0` is made to fail.
    provider.fail_on("promote", "g0");
    let mut l1 = host_state("unused");
    l1.attributes = json!({ "guest": "nested_guest.g0", "nested": true });
    l1.id = None;
    l1.level = 1;
    state.resources.insert(addr("kvm_host.l1"), l1);
    state.resources.insert(addr("nested_guest.inner"), guest_state("inner", "inner-id", "kvm_host.l1"));
    let r = refresh_hosts(&BTreeMap::new(), &state, &hosts);
    assert!(r.state.resources.contains_key(&addr("nested_guest.inner")));
    assert!(r.warnings.iter().any(|w| w.contains("promoted host `kvm_host.l1`")), "{:?}", r.warnings);
}

#[test]
fn what_ran_inside_a_vanished_guest_is_gone_at_every_level_below() {
    let (_, hosts, mut state) = world(1);
    // g0 exists on the memory host; `lost` (promoted to l1) does not, and l2 is promoted from a guest on l1.
    for (host, guest, level) in
        [("kvm_host.l1", "nested_guest.lost", 1), ("kvm_host.l2", "nested_guest.mid", 2)]
    {
        let mut h = host_state("unused");
        h.attributes = json!({ "guest": guest, "nested": true });
        h.id = None;
        h.level = level;
        state.resources.insert(addr(host), h);
    }
    state.resources.insert(addr("nested_guest.lost"), guest_state("lost", "lost-id", "kvm_host.l0"));
    state.resources.insert(addr("nested_guest.mid"), guest_state("mid", "mid-id", "kvm_host.l1"));
    state.resources.insert(addr("nested_guest.deep"), guest_state("deep", "deep-id", "kvm_host.l2"));
    let r = refresh_hosts(&BTreeMap::new(), &state, &hosts);
    for gone in ["nested_guest.lost", "nested_guest.mid", "nested_guest.deep"] {
        assert!(!r.state.resources.contains_key(&addr(gone)), "{gone} is still there");
    }
    assert!(r.state.resources.contains_key(&addr("nested_guest.g0")));
    assert!(!r.warnings.iter().any(|w| w.contains("cannot reach")), "{:?}", r.warnings);
}

#[test]
fn refreshes_a_thousand_guests_quickly() {
    let (_, hosts, state) = world(1000);
    let start = std::time::Instant::now();
    let r = refresh_hosts(&BTreeMap::new(), &state, &hosts);
    assert!(r.warnings.is_empty());
    assert_eq!(r.state.resources.len(), 1001);
    assert!(start.elapsed() < std::time::Duration::from_secs(2), "{:?}", start.elapsed());
}
