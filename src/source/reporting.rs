//! Reporting Web Service `MessageTrace` (OData v2 Atom) scanner. CONTRACT SKELETON.

use std::io::Read;

use super::{PageCtx, PageEnd};
use crate::error::Result;
use crate::record::Record;

/// `{reporting_url}?$filter=StartDate eq datetime'S' and EndDate eq datetime'E'`, URL-encoded.
pub fn query_url(reporting_url: &str, start: i64, end: i64) -> String {
    let _ = (reporting_url, start, end);
    unimplemented!()
}

/// Scan one Atom page, calling `on_record` for each `<entry>` as soon as it is complete.
/// A body cut mid-entry or malformed is `Error::Malformed` (records before it were yielded).
pub fn scan_page<R: Read>(
    body: R,
    ctx: &PageCtx<'_>,
    on_record: &mut dyn FnMut(&Record<'_>) -> Result<()>,
) -> Result<PageEnd> {
    let _ = (body, ctx, on_record);
    unimplemented!()
}

/// Microsoft's error text from an error body (OData XML or JSON), for logs and errors.
pub fn error_message(body: &[u8]) -> Option<String> {
    let _ = body;
    unimplemented!()
}
