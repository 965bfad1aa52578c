//! The two Microsoft message-trace APIs, as pure scanners over a response body.
//!
//! CONTRACT SKELETON — the sources helper implements `reporting` and `graph`.
//! Both yield the same `Record` (event names of SPEC §4) through a callback, one
//! record at a time, reading the body in small chunks so memory does not grow
//! with the page size. No IO besides reading the given `Read`.

pub mod graph;
pub mod reporting;

/// What the scanner needs to know about the request that produced the body.
#[derive(Debug, Clone, Copy)]
pub struct PageCtx<'a> {
    /// The URL the page was fetched from (base for a relative next link).
    pub request_url: &'a str,
    /// The query window, epoch seconds UTC (Graph records carry it as StartDate/EndDate).
    pub window_start: i64,
    pub window_end: i64,
}

/// What a fully scanned page says about paging.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageEnd {
    /// Absolute URL of the next page, if any.
    pub next_link: Option<String>,
    /// Records yielded.
    pub records: u64,
}
