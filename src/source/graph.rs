//! Microsoft Graph exchangeMessageTrace (JSON) scanner. CONTRACT SKELETON.

use std::io::Read;

use super::{PageCtx, PageEnd};
use crate::error::Result;
use crate::record::Record;

/// `{graph_url}?$filter=receivedDateTime ge S and receivedDateTime le E&$top=5000`, URL-encoded.
pub fn query_url(graph_url: &str, start: i64, end: i64, top: u32) -> String {
    let _ = (graph_url, start, end, top);
    unimplemented!()
}

/// Scan one JSON page, calling `on_record` for each element of `value` as soon as it is complete.
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
