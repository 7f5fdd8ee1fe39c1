//! Turning libvirt's errors into [`ProviderError`]s that name the operation and the object.

use nestform_provider::ProviderError;
use virt::error::{Error, ErrorNumber};

/// A `map_err` adapter: `conn.define_domain_xml(..).map_err(op("define domain", name))`. The message
/// is libvirt's own, which says what was wrong.
pub(crate) fn op<'a>(operation: &'static str, object: &'a str) -> impl FnOnce(Error) -> ProviderError + 'a {
    move |e| ProviderError::op(operation, object, e.message())
}

/// Whether libvirt's error has the code `code`.
pub(crate) fn is(e: &Error, code: ErrorNumber) -> bool {
    e.code().is_known_and(|c| c == code)
}
