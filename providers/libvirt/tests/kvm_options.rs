//! `set_kvm_module_options` where it must not touch this machine: libvirt's test driver, whose
//! guests run on no KVM. (The module-file and reload logic is unit-tested on a fake root in `kvm`.)

use std::collections::BTreeMap;

use nestform_provider::{Hypervisor, ProviderError};
use nestform_provider_libvirt::LibvirtProvider;

#[test]
fn the_test_driver_refuses_kvm_module_options() {
    let h = LibvirtProvider::new().open("test:///default").unwrap();
    let options: BTreeMap<String, String> = [("nested".to_string(), "1".to_string())].into();
    let err = h.set_kvm_module_options(&options).unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("test:///default, whose guests do not run on KVM"), "{err}");
}
