//! Decoding a `nat_network` block, with its optional `dhcp` range checked against the CIDR.

use hcl::edit::structure::{Block, Body};
use hcl::edit::Span;
use nestform_types::{DhcpRange, NatNetworkSpec, ResourceType};

use super::Inst;
use crate::diag::{Diagnostic, SourceRange};
use crate::load::{range_of, Loader};
use crate::value;

impl Loader {
    pub(super) fn decode_network(
        &mut self,
        cx: &mut Inst,
        body: &Body,
        header: &SourceRange,
    ) -> Option<NatNetworkSpec> {
        let host = self.reference(cx, body, "", "host", ResourceType::KvmHost, true);
        let name = self.opt(cx, body, "", "name", value::string).unwrap_or_else(|| cx.addr.object_name());
        let cidr = self.req(cx, body, "", "cidr", header, value::cidr);
        self.check_name(cx, &name);
        let domain = self.opt(cx, body, "", "domain", |v, n| {
            let domain = value::string(v, n)?;
            crate::names::dns_domain(&domain, n)?;
            Ok(domain)
        });
        let mut dhcp = None;
        let dhcp_blocks: Vec<&Block> = body.get_blocks("dhcp").collect();
        for extra in dhcp_blocks.iter().skip(1) {
            cx.ok = false;
            self.error(
                Diagnostic::error("only one `dhcp` block is allowed")
                    .with_range(range_of(cx.file, extra.ident.span()))
                    .with_help("merge the `dhcp` blocks into one"),
            );
        }
        if let Some(b) = dhcp_blocks.first() {
            let at = range_of(cx.file, b.ident.span());
            self.unknown_attributes(&b.body, cx.file, &["start", "end"], &[], "dhcp");
            let start = self.req(cx, &b.body, "dhcp", "start", &at, value::ipv4);
            let end = self.req(cx, &b.body, "dhcp", "end", &at, value::ipv4);
            if let (Some(start), Some(end), Some(net)) = (start, end, cidr) {
                for (ip, which) in [(start, "start"), (end, "end")] {
                    if !net.contains(&ip) {
                        cx.ok = false;
                        self.error(
                            Diagnostic::error(format!("`dhcp.{which}` `{ip}` is outside `{net}`"))
                                .with_range(cx.ranges[&format!("dhcp.{which}")].clone())
                                .with_help(format!("pick an address inside `{net}`")),
                        );
                    }
                }
                if start > end {
                    cx.ok = false;
                    self.error(
                        Diagnostic::error(format!("`dhcp.start` `{start}` comes after `dhcp.end` `{end}`"))
                            .with_range(cx.ranges["dhcp.start"].clone())
                            .with_help("swap them"),
                    );
                }
                dhcp = Some(DhcpRange { start, end });
            }
        }
        Some(NatNetworkSpec { host: host?, name, cidr: cidr?, dhcp, domain })
    }
}
