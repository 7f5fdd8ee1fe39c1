//! Turns resolved specs into provider requests: the one place that decides what a `nested_guest` or a
//! `nat_network` means in hypervisor terms (libvirt names, bytes, CPU mode, boot method). The planner
//! uses it to render the definition a plan shows; apply uses it to create exactly that.

use nestform_provider::{
    BootRequest, CpuRequest, DiskRequest, GuestRequest, InterfaceRequest, NetworkRequest,
};
use nestform_types::{NatNetworkSpec, NestedGuestSpec, ResourceAddr};

/// The request for a guest. `network_name` maps a `nat_network` address to its libvirt name; an
/// address it cannot map keeps the address's object name (the planner reports unknown references).
pub fn guest_request(
    spec: &NestedGuestSpec,
    network_name: impl Fn(&ResourceAddr) -> Option<String>,
) -> GuestRequest {
    let cpu = match spec.cpu.as_str() {
        "host-passthrough" => CpuRequest::HostPassthrough,
        "host-model" => CpuRequest::HostModel,
        model => CpuRequest::Model { name: model.to_string(), require: Vec::new() },
    };
    GuestRequest {
        name: spec.name.clone(),
        vcpus: spec.vcpus,
        memory_bytes: spec.memory.bytes(),
        cpu,
        disks: spec
            .disks
            .iter()
            .map(|d| DiskRequest {
                name: d.name.clone(),
                size_bytes: d.size.bytes(),
                format: d.format,
                preallocation: d.preallocation,
                cache: d.cache,
                bus: d.bus,
            })
            .collect(),
        interfaces: spec
            .networks
            .iter()
            .map(|n| InterfaceRequest {
                network: network_name(&n.nat_network).unwrap_or_else(|| n.nat_network.object_name()),
                mac: n.mac.clone(),
            })
            .collect(),
        // Booting a `lab` install (kernel, initramfs, shared root) comes with the real-guests work;
        // until then every guest boots from its first disk.
        boot: BootRequest::Disk,
        running: spec.running,
    }
}

/// The request for a NAT network: the host side takes the first address of the CIDR, and DHCP hands
/// out the rest unless a range is given.
pub fn network_request(spec: &NatNetworkSpec) -> NetworkRequest {
    let hosts: Vec<_> = spec.cidr.hosts().take(2).collect();
    let address = hosts.first().copied().unwrap_or(spec.cidr.network());
    let (dhcp_start, dhcp_end) = match &spec.dhcp {
        Some(r) => (Some(r.start), Some(r.end)),
        None if spec.cidr.prefix_len() <= 29 => {
            let last = u32::from(spec.cidr.broadcast()) - 1;
            (hosts.get(1).copied(), Some(last.into()))
        }
        None => (None, None),
    };
    NetworkRequest {
        name: spec.name.clone(),
        address,
        prefix_len: spec.cidr.prefix_len(),
        dhcp_start,
        dhcp_end,
        domain: spec.domain.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_takes_first_address_and_dhcp_rest() {
        let spec = NatNetworkSpec {
            host: "kvm_host.l0".parse().unwrap(),
            name: "lan".into(),
            cidr: "192.168.100.0/24".parse().unwrap(),
            dhcp: None,
            domain: None,
        };
        let r = network_request(&spec);
        assert_eq!(r.address.to_string(), "192.168.100.1");
        assert_eq!(r.dhcp_start.unwrap().to_string(), "192.168.100.2");
        assert_eq!(r.dhcp_end.unwrap().to_string(), "192.168.100.254");
    }
}
