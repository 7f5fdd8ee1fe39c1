//! Checks that span several resources: a guest's networks are on its host, guests on a promoted
//! host need `nested = true`, and networks on one nesting path do not overlap.
//!
//! Overlap matters along the path down to level 0 because a nested guest's traffic is NATed
//! through every level below it: a level-2 network that reuses a level-1 range makes addresses
//! ambiguous in the level-1 guest's routing table.

use ipnet::Ipv4Net;
use nestform_types::{ResourceAddr, ResourceSpec};

use crate::diag::Diagnostic;
use crate::load::Loader;

impl Loader {
    pub(crate) fn check_all(&mut self) {
        let resources = self.config.resources.clone();
        let host_of_guest = |addr: &ResourceAddr| match resources.get(addr).map(|r| &r.spec) {
            Some(ResourceSpec::NestedGuest(g)) => Some(g.host.clone()),
            _ => None,
        };
        // The hosts from `host` down to level 0: host, the host of the guest it promotes, ...
        let path = |host: &ResourceAddr| {
            let mut out = vec![host.clone()];
            let mut cur = host.clone();
            while let Some(ResourceSpec::KvmHost(h)) = resources.get(&cur).map(|r| &r.spec) {
                let Some(next) = h.guest.as_ref().and_then(host_of_guest) else { break };
                if out.contains(&next) {
                    break;
                }
                out.push(next.clone());
                cur = next;
            }
            out
        };
        let mut networks: Vec<(ResourceAddr, ResourceAddr, Ipv4Net)> = vec![];
        for (addr, r) in &resources {
            match &r.spec {
                ResourceSpec::NestedGuest(g) => {
                    if let Some(ResourceSpec::KvmHost(h)) = resources.get(&g.host).map(|h| &h.spec) {
                        if h.guest.is_some() && !h.nested {
                            self.error(
                                Diagnostic::error(format!(
                                    "`{addr}` is placed on `{}`, a promoted guest without nesting",
                                    g.host
                                ))
                                .with_range(r.attr_range("host"))
                                .with_related(resources[&g.host].range.clone(), "declared here")
                                .with_help(format!("set `nested = true` on `{}`", g.host)),
                            );
                        }
                    }
                    for nic in &g.networks {
                        let Some(ResourceSpec::NatNetwork(n)) =
                            resources.get(&nic.nat_network).map(|n| &n.spec)
                        else {
                            continue;
                        };
                        if n.host != g.host {
                            let path = format!("network.{}.nat_network", nic.name);
                            self.error(
                                Diagnostic::error(format!(
                                    "`{addr}` runs on `{}` but its network `{}` uses `{}`, which is on `{}`",
                                    g.host, nic.name, nic.nat_network, n.host
                                ))
                                .with_range(r.attr_range(&path))
                                .with_related(
                                    resources[&nic.nat_network].attr_range("host"),
                                    format!("`{}` is on `{}`", nic.nat_network, n.host),
                                )
                                .with_help(format!(
                                    "use a `nat_network` whose `host` is `{}`, or move the guest",
                                    g.host
                                )),
                            );
                        }
                    }
                }
                ResourceSpec::NatNetwork(n) => networks.push((addr.clone(), n.host.clone(), n.cidr)),
                _ => {}
            }
        }
        for (i, (a, ha, ca)) in networks.iter().enumerate() {
            for (b, hb, cb) in &networks[i + 1..] {
                let overlap = ca.contains(&cb.network()) || cb.contains(&ca.network());
                if !overlap {
                    continue;
                }
                let same = ha == hb;
                if !(same || path(ha).contains(hb) || path(hb).contains(ha)) {
                    continue;
                }
                let where_ = if same {
                    format!("both on `{ha}`")
                } else {
                    format!("on `{hb}` and `{ha}`, one nested in the other")
                };
                self.error(
                    Diagnostic::error(format!("`{b}` `{cb}` overlaps `{a}` `{ca}`"))
                        .with_detail(format!("the networks are {where_}, so their addresses would be ambiguous"))
                        .with_range(resources[b].attr_range("cidr"))
                        .with_label(format!("overlaps `{ca}`"))
                        .with_related(resources[a].attr_range("cidr"), format!("`{a}` uses `{ca}`"))
                        .with_help("give each network on a nesting path its own range, for example with `cidrsubnet(var.base, 8, LEVEL)`"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{load_sources, SourceFile, VarInputs};

    #[test]
    fn the_same_range_on_unrelated_hosts_is_fine() {
        // Two level-0 hosts are separate machines: their NAT networks never meet.
        let text = r#"
kvm_host "a" {
  uri = "qemu+ssh://a/system"
}
kvm_host "b" {
  uri = "qemu+ssh://b/system"
}
nat_network "na" {
  host = kvm_host.a
  cidr = "192.168.122.0/24"
}
nat_network "nb" {
  host = kvm_host.b
  cidr = "192.168.122.0/24"
}
"#;
        assert!(load_sources(vec![SourceFile::new("m.nf.hcl", text)], &VarInputs::default()).is_ok());
    }
}
