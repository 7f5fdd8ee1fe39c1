//! Prints what nestform's libvirt provider learns about a host, as JSON, and optionally asks it to
//! apply KVM module options: a by-hand check of `facts` and `set_kvm_module_options` on a real host.
//!
//! `cargo run -p nestform-provider-libvirt --example hostprobe -- qemu:///system [nested=1 ...]`
//!
//! With options it really writes `/etc/modprobe.d/<module>.conf` and reloads the module when the
//! host can take them, so pass options only on a machine where that is meant.

use std::collections::BTreeMap;

use nestform_provider::Hypervisor;
use nestform_provider_libvirt::{tcg_cpu_for, LibvirtProvider};

fn main() {
    let mut args = std::env::args().skip(1);
    let uri = args.next().unwrap_or_else(|| "qemu:///system".into());
    let options: BTreeMap<String, String> = args
        .map(|a| {
            let (k, v) = a.split_once('=').unwrap_or_else(|| panic!("`{a}` is not `name=value`"));
            (k.to_string(), v.to_string())
        })
        .collect();
    let h = LibvirtProvider::new().open(&uri).unwrap_or_else(|e| panic!("{e}"));
    let facts = h.facts().unwrap_or_else(|e| panic!("{e}"));
    println!("domain type: {}", h.domain_type());
    println!("{}", serde_json::to_string_pretty(&facts).expect("facts serialise"));
    if facts.acceleration.as_deref() == Some("tcg") {
        println!("TCG guest CPU for host-passthrough: {:?}", tcg_cpu_for(&facts));
    }
    if !options.is_empty() {
        match h.set_kvm_module_options(&options) {
            Ok(()) => println!("set_kvm_module_options: ok"),
            Err(e) => println!("set_kvm_module_options: {e}"),
        }
    }
}
