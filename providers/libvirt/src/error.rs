//! Turning libvirt's errors into [`ProviderError`]s that name the operation and the object.

use nestform_provider::ProviderError;
use virt::error::{Error, ErrorDomain, ErrorNumber};

/// A `map_err` adapter: `conn.define_domain_xml(..).map_err(op("define domain", name))`. The message
/// is libvirt's own, which says what was wrong, with what it means when the connection itself broke.
pub(crate) fn op<'a>(operation: &'static str, object: &'a str) -> impl FnOnce(Error) -> ProviderError + 'a {
    move |e| ProviderError::op(operation, object, explained(&e))
}

/// libvirt's message; when the connection broke, followed by what that means, since libvirt's words
/// name only the socket call. Its RPC layer says so as a system error ("End of file while reading
/// data", "Cannot recv data") when the daemon goes during a call, and as an internal error ("client
/// socket is closed") for a call made after; both were seen with libvirtd killed in a promoted guest.
fn explained(e: &Error) -> String {
    let broken = e.domain().is_known_and(|d| d == ErrorDomain::Rpc)
        && (is(e, ErrorNumber::SystemError) || is(e, ErrorNumber::InternalError));
    explain(broken, e.message())
}

fn explain(broken: bool, message: &str) -> String {
    if broken {
        format!(
            "{message}: the connection to libvirtd ended (libvirtd stopped or crashed, or the way to it \
             broke); what this call did is unknown, and the next `nestform apply` reads what is there"
        )
    } else {
        message.to_string()
    }
}

/// Whether libvirt's error has the code `code`.
pub(crate) fn is(e: &Error, code: ErrorNumber) -> bool {
    e.code().is_known_and(|c| c == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_says_what_it_means_and_other_errors_stay_libvirts() {
        // libvirt's virt::Error cannot be made outside the crate; the classification is one line above.
        let text = explain(true, "End of file while reading data: Input/output error");
        assert!(
            text.starts_with(
                "End of file while reading data: Input/output error: the connection to libvirtd ended"
            ),
            "{text}"
        );
        assert_eq!(explain(false, "bad XML"), "bad XML");
    }
}
