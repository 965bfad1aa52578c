//! The two Microsoft message-trace APIs, as pure scanners over a response body.
//!
//! Owns: `PageCtx`/`PageEnd` (the contract with the puller), and what both scanners
//! share: the bounded chunked reader (`Chunked`), date normalisation to RFC 3339 UTC,
//! JSON number validation, relative-URL resolution for next links, query-string
//! building and the JSON error-body reader. Both scanners yield the same `Record`
//! (event names of SPEC §4) through a callback, one record at a time, reading the
//! body in `READ_CHUNK` pieces so memory does not grow with the page size.
//! Must not: do any IO besides reading the given `Read`, or read the clock.

use std::borrow::Cow;
use std::io::Read;

use crate::error::{Error, Result};
use crate::record::Value;

pub mod api;
pub mod detail;
pub mod graph;
pub mod link;
pub mod reporting;
mod xml;

pub use api::Api;

/// Bytes asked of the body per `read`: large enough that a 10 MB page takes ~160
/// reads, small enough that an idle tenant's page buffer is negligible.
pub const READ_CHUNK: usize = 64 * 1024;

/// Largest buffer a scanner ever holds: one `<entry>` (Atom) or one element of
/// `value` (JSON) must fit in it. Real entries are ~1.5 KB; 1 MiB leaves room for
/// absurd subjects while keeping peak RSS within SPEC §9. A larger unit is
/// `Error::Malformed`.
pub const MAX_BUFFER: usize = 1024 * 1024;

/// Deepest element/array nesting accepted inside one entry (Atom entries are 4
/// levels deep; Graph elements are flat). Bounds recursion and the tag stack.
pub const MAX_DEPTH: usize = 32;

/// Most entries Microsoft puts on one Reporting Web Service page (SPEC §2).
pub const RWS_PAGE_MAX: u64 = 2000;
/// A page may hold this many times the API's page maximum (`RWS_PAGE_MAX`, Graph's
/// largest `$top`); beyond it the page is malformed (SPEC §3): memory and the
/// per-window lists stay bounded whatever one tenant's server sends.
pub const PAGE_RECORDS_FACTOR: u64 = 10;

/// The record cap of one page of `api`.
pub fn max_page_records(api: Api) -> u64 {
    let page = match api {
        Api::Reporting => RWS_PAGE_MAX,
        Api::Graph => u64::from(api::GRAPH_TOP),
    };
    page.saturating_mul(PAGE_RECORDS_FACTOR)
}

/// Start of the message of a unit over `MAX_BUFFER` (see `outside_entries`).
pub(crate) const TOO_LARGE: &str = "one entry is larger than";

/// A `Chunked::fill` error met while no entry was open: what did not fit was markup
/// between the entries (a comment, a processing instruction), not an entry.
pub(crate) fn outside_entries(e: Error) -> Error {
    match e {
        Error::Malformed(m) if m.starts_with(TOO_LARGE) => Error::Malformed(format!(
            "markup outside the entries (a comment or processing instruction) is larger than {MAX_BUFFER} bytes"
        )),
        other => other,
    }
}

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
    /// How the scan used memory (for tests and `make bench`).
    pub stats: ScanStats,
}

/// Memory use of one page scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Largest size the read buffer reached, in bytes (always ≤ `MAX_BUFFER`).
    pub max_buffer: usize,
}

/// A body read in `READ_CHUNK` pieces into one buffer that keeps only the unit
/// being scanned: consumed bytes are dropped, the rest moved to the front, and the
/// buffer grows (doubling) only when one unit does not fit, up to `MAX_BUFFER`.
pub(crate) struct Chunked<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    max_buffer: usize,
}

impl<R: Read> Chunked<R> {
    pub(crate) fn new(reader: R) -> Self {
        Chunked {
            reader,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            eof: false,
            max_buffer: READ_CHUNK,
        }
    }

    /// The bytes read and not yet consumed.
    pub(crate) fn data(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or(&[])
    }

    /// Forget the first `n` bytes of `data()`.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub(crate) fn stats(&self) -> ScanStats {
        ScanStats {
            max_buffer: self.max_buffer,
        }
    }

    /// Append more of the body to `data()`. `Ok(false)` at the end of the body.
    pub(crate) fn fill(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.end >= self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end = self.end.saturating_sub(self.start);
                self.start = 0;
            }
            if self.end >= self.buf.len() {
                if self.buf.len() >= MAX_BUFFER {
                    return Err(Error::Malformed(format!("{TOO_LARGE} {MAX_BUFFER} bytes")));
                }
                let grown = self.buf.len().saturating_mul(2).min(MAX_BUFFER);
                self.buf.resize(grown, 0);
                self.max_buffer = self.max_buffer.max(grown);
            }
        }
        loop {
            let spare = self.buf.get_mut(self.end..).unwrap_or_default();
            let room = spare.len();
            match self.reader.read(spare) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end = self.end.saturating_add(n.min(room));
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(crate::http::body_error(e)),
            }
        }
    }
}

/// Reuse a record's field vector for the next record (whose borrows differ): the
/// in-place `collect` keeps the allocation, so records cost no `Vec` allocation.
pub(crate) fn recycle<'b>(mut v: Vec<(Cow<'_, str>, Value<'_>)>) -> Vec<(Cow<'b, str>, Value<'b>)> {
    v.clear();
    // `filter_map` (not `filter`) because the item type changes; the vector is empty.
    #[allow(clippy::unnecessary_filter_map)]
    v.into_iter().filter_map(|_| None).collect()
}

/// Index of the first `"`, `\\` or control byte (below 0x20) in `hay`, or its
/// length: where a JSON string's plain run ends. Eight bytes at a time (SWAR): the
/// Graph scanner spent a third of its instructions stepping through strings byte by
/// byte (tests/bench/PROFILE.md).
// Inlined: called once or twice per string, and at `opt-level = "s"` the call
// costs as much as the search (Graph scan 11,504 -> 11,010 Ir/record).
#[inline(always)]
pub(crate) fn json_run(hay: &[u8]) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let mut rest = hay;
    let mut base = 0usize;
    while let Some((word, after)) = rest.split_first_chunk::<8>() {
        let w = u64::from_le_bytes(*word);
        // Below 0x20: the SWAR "less than" test, high-bit bytes excluded by `!w`.
        let hit = (w.wrapping_sub(LO.wrapping_mul(0x20)) & !w & HI)
            | zero(w ^ LO.wrapping_mul(u64::from(b'"')))
            | zero(w ^ LO.wrapping_mul(u64::from(b'\\')));
        if hit != 0 {
            // Each test flags its first true byte exactly (borrows only run upwards).
            return base.saturating_add((hit.trailing_zeros() / 8) as usize);
        }
        base = base.saturating_add(8);
        rest = after;
    }
    base.saturating_add(
        rest.iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
            .unwrap_or(rest.len()),
    )
}

/// `s.trim()`, without the Unicode scan when both ends are visible ASCII (nearly
/// every field): the same result, a fifth of the instructions.
pub(crate) fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) if f.is_ascii_graphic() && l.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// A date as RFC 3339 UTC text. Microsoft sends `2026-11-24T10:00:00.1234567`
/// (UTC, no zone): `Z` is appended and the fractional digits kept as sent. `Z` is
/// kept (`z` upper-cased), `±00:00` becomes `Z`, another offset is converted to UTC
/// (fraction kept), a space or `t` separator becomes `T`. Text that is not an ISO date is passed on as sent.
pub(crate) fn normalize_date(s: Cow<'_, str>) -> Cow<'_, str> {
    let t = trim(&s);
    // The common form first (`2026-11-24T10:00:00[.f]`, UTC without a zone, as the
    // Reporting Web Service sends it): checked in one pass, no instant computed.
    if let Some(plain) = t.strip_suffix('Z') {
        // Graph's form: already RFC 3339 UTC.
        if plain.len() == s.len().saturating_sub(1) && crate::time::is_plain_utc(plain) {
            return s;
        }
    } else if crate::time::is_plain_utc(t) {
        let mut out = String::with_capacity(t.len().saturating_add(1));
        out.push_str(t);
        out.push('Z');
        return Cow::Owned(out);
    }
    let Some(inst) = crate::time::parse_iso(t) else {
        return s;
    };
    let b = t.as_bytes();
    // Zone starts at the first byte after the seconds that is not part of the fraction.
    let zone_at = b
        .iter()
        .enumerate()
        .skip(19)
        .find(|(_, c)| !(c.is_ascii_digit() || **c == b'.'))
        .map_or(b.len(), |(i, _)| i);
    let (main, zone) = (
        t.get(..zone_at).unwrap_or(t),
        t.get(zone_at..).unwrap_or(""),
    );
    // `parse_iso` also takes `t` or a space between date and time: rebuild those.
    let has_t = b.get(10) == Some(&b'T');
    match zone {
        "Z" if has_t && t.len() == s.len() => s,
        "" | "Z" | "z" | "+00:00" | "-00:00" if has_t => {
            let mut out = String::with_capacity(main.len().saturating_add(1));
            out.push_str(main);
            out.push('Z');
            Cow::Owned(out)
        }
        _ => {
            let frac = main.get(19..).unwrap_or("");
            let mut out = crate::time::rfc3339(inst.secs);
            out.pop();
            out.push_str(frac);
            out.push('Z');
            Cow::Owned(out)
        }
    }
}

/// True when `s` is exactly a JSON number literal (RFC 8259 §6).
// why: `i` only steps past bytes that `b.get(i)` found, so it never exceeds `b.len()`.
#[allow(clippy::arithmetic_side_effects)]
pub fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let from = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - from
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Resolve `href` against the absolute URL `base` (RFC 3986 §5.2, without the
/// corner cases Microsoft never produces): absolute links are used as they are,
/// `//host/..`, `/path`, `?query` and relative paths (with `.`/`..`) are merged.
pub fn resolve_url(base: &str, href: &str) -> String {
    let href = href.trim();
    if has_scheme(href) {
        return href.to_string();
    }
    let Some(scheme_at) = base.find("://") else {
        return href.to_string();
    };
    let scheme_end = scheme_at.saturating_add(3);
    let scheme = base.get(..scheme_at).unwrap_or("https");
    if let Some(rest) = href.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    let after = base.get(scheme_end..).unwrap_or("");
    let auth_len = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority_end = scheme_end.saturating_add(auth_len);
    let origin = base.get(..authority_end).unwrap_or(base);
    let base_rest = base.get(authority_end..).unwrap_or("");
    let base_path = base_rest
        .get(..base_rest.find(['?', '#']).unwrap_or(base_rest.len()))
        .unwrap_or("");
    if href.is_empty() {
        return base.to_string();
    }
    if href.starts_with('?') {
        return format!("{origin}{base_path}{href}");
    }
    if href.starts_with('#') {
        let no_frag = base
            .get(..base.find('#').unwrap_or(base.len()))
            .unwrap_or(base);
        return format!("{no_frag}{href}");
    }
    let (href_path, href_tail) = href.split_at(href.find(['?', '#']).unwrap_or(href.len()));
    let merged = if href_path.starts_with('/') {
        href_path.to_string()
    } else {
        let dir = base_path
            .get(..base_path.rfind('/').map_or(0, |i| i.saturating_add(1)))
            .unwrap_or("");
        if dir.is_empty() {
            format!("/{href_path}")
        } else {
            format!("{dir}{href_path}")
        }
    };
    format!("{origin}{}{href_tail}", remove_dot_segments(&merged))
}

fn has_scheme(s: &str) -> bool {
    let Some(colon) = s.find(':') else {
        return false;
    };
    let scheme = s.get(..colon).unwrap_or("");
    scheme
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

fn remove_dot_segments(path: &str) -> String {
    if !path.contains("/.") {
        return path.to_string();
    }
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').collect();
    let last = segs.len().saturating_sub(1);
    for (i, seg) in segs.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

/// Append `?` or `&` and a query already percent-encoded.
pub(crate) fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// Microsoft's JSON error body: `{"error":{"code":C,"message":M}}` where M is a
/// string or `{"value":M}` (OData JSON; `odata.error` is accepted for `error`).
/// Returns `C: M` (or M when there is no code).
pub(crate) fn json_error_message(body: &[u8]) -> Option<String> {
    use miniserde::json::Value as J;
    let text = std::str::from_utf8(body)
        .ok()?
        .trim_start_matches('\u{feff}');
    let root: J = miniserde::json::from_str(text).ok()?;
    let J::Object(root) = root else {
        return None;
    };
    let J::Object(err) = root.get("error").or_else(|| root.get("odata.error"))? else {
        return None;
    };
    let code = match err.get("code") {
        Some(J::String(c)) => c.as_str(),
        _ => "",
    };
    let message = match err.get("message") {
        Some(J::String(m)) => m.clone(),
        Some(J::Object(m)) => match m.get("value") {
            Some(J::String(v)) => v.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    join_code(code, &message)
}

pub(crate) fn join_code(code: &str, message: &str) -> Option<String> {
    match (code.is_empty(), message.is_empty()) {
        (true, true) => None,
        (true, false) => Some(message.to_string()),
        (false, true) => Some(code.to_string()),
        (false, false) => Some(format!("{code}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_become_rfc3339_utc() {
        let n = |s: &str| normalize_date(Cow::Borrowed(s)).into_owned();
        assert_eq!(
            n("2026-11-24T10:00:00.1234567"),
            "2026-11-24T10:00:00.1234567Z"
        );
        assert_eq!(n("2026-11-24T10:00:00"), "2026-11-24T10:00:00Z");
        assert_eq!(n("2026-11-24T10:00:00.123Z"), "2026-11-24T10:00:00.123Z");
        assert!(matches!(
            normalize_date(Cow::Borrowed("2026-11-24T10:00:00Z")),
            Cow::Borrowed(_)
        ));
        assert_eq!(n("2026-11-24T10:00:00+00:00"), "2026-11-24T10:00:00Z");
        assert_eq!(n("2026-11-24T12:00:00.5+02:00"), "2026-11-24T10:00:00.5Z");
        assert_eq!(n("2026-11-24T00:30:00-01:00"), "2026-11-24T01:30:00Z");
        assert_eq!(n("not a date"), "not a date");
        assert_eq!(n("2026-11-24 10:00:00.25"), "2026-11-24T10:00:00.25Z");
    }

    #[test]
    fn json_numbers() {
        for ok in [
            "0",
            "-0",
            "12",
            "1.5",
            "1e9",
            "-2.5E-3",
            "1234567890123456789012",
        ] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "+1", "NaN", "INF", " 1", "1 ", "0x10",
        ] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    #[test]
    fn resolves_links() {
        let b = "https://reports.office365.com/ecp/ReportingWebService/Reporting.svc/";
        assert_eq!(
            resolve_url(b, "MessageTrace?$skiptoken=1999"),
            "https://reports.office365.com/ecp/ReportingWebService/Reporting.svc/MessageTrace?$skiptoken=1999"
        );
        let r = "https://h.example/ecp/reportingwebservice/reporting.svc/MessageTrace?$filter=x";
        assert_eq!(
            resolve_url(r, "MessageTrace?$skiptoken=2"),
            "https://h.example/ecp/reportingwebservice/reporting.svc/MessageTrace?$skiptoken=2"
        );
        assert_eq!(resolve_url(r, "/ecp/x?a=1"), "https://h.example/ecp/x?a=1");
        assert_eq!(
            resolve_url(r, "?$skiptoken=3"),
            "https://h.example/ecp/reportingwebservice/reporting.svc/MessageTrace?$skiptoken=3"
        );
        assert_eq!(resolve_url(r, "https://o.example/y"), "https://o.example/y");
        assert_eq!(resolve_url(r, "//o.example/y"), "https://o.example/y");
        assert_eq!(
            resolve_url(r, "../a/./b"),
            "https://h.example/ecp/reportingwebservice/a/b"
        );
        assert_eq!(resolve_url("http://h:8080", "x"), "http://h:8080/x");
    }

    #[test]
    fn json_errors() {
        let m = |s: &str| json_error_message(s.as_bytes());
        assert_eq!(
            m(r#"{"error":{"code":"InvalidRequest","message":"bad filter"}}"#).as_deref(),
            Some("InvalidRequest: bad filter")
        );
        assert_eq!(
            m(r#"{"odata.error":{"code":"","message":{"lang":"en-US","value":"gone"}}}"#)
                .as_deref(),
            Some("gone")
        );
        assert_eq!(m("<html/>"), None);
        assert_eq!(m(r#"{"value":[]}"#), None);
    }

    #[test]
    fn json_run_matches_a_byte_loop() {
        let slow = |h: &[u8]| {
            h.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(h.len())
        };
        for b in 0..=255u8 {
            for prev in [0u8, 0x1f, 0x20, 0x21, 0x5b, 0x80, 0xff, b.wrapping_add(1)] {
                for at in 0..20 {
                    let mut h = vec![b'a'; 21];
                    h[at] = b;
                    if at > 0 {
                        h[at - 1] = prev;
                    }
                    assert_eq!(json_run(&h), slow(&h), "{b} {prev} {at}");
                }
            }
        }
    }

    #[test]
    fn recycle_keeps_capacity() {
        let s = String::from("x");
        let mut v: Vec<(Cow<'_, str>, Value<'_>)> = Vec::with_capacity(16);
        v.push((Cow::Borrowed(s.as_str()), Value::Null));
        let cap = v.capacity();
        let w: Vec<(Cow<'static, str>, Value<'static>)> = recycle(v);
        assert!(w.is_empty());
        assert_eq!(w.capacity(), cap);
    }

    #[test]
    fn a_huge_comment_between_entries_is_not_called_an_entry() {
        let mut body = b"<feed xmlns=\"http://www.w3.org/2005/Atom\"><!--".to_vec();
        body.extend(std::iter::repeat_n(b'x', MAX_BUFFER + 10));
        body.extend_from_slice(b"--></feed>");
        let ctx = PageCtx {
            request_url: "https://h.example/x",
            window_start: 0,
            window_end: 1,
        };
        let e = Api::Reporting.scan_page(&body[..], &ctx, &mut |_| Ok(()));
        let text = format!("{e:?}");
        assert!(text.contains("markup outside the entries"), "{text}");
        assert!(!text.contains(TOO_LARGE), "{text}");
    }

    #[test]
    fn the_record_cap_is_ten_pages() {
        assert_eq!(max_page_records(Api::Reporting), 20_000);
        assert_eq!(max_page_records(Api::Graph), 50_000);
    }

    #[test]
    fn chunked_stays_bounded() {
        let body = vec![b'a'; MAX_BUFFER + 10];
        let mut c = Chunked::new(&body[..]);
        let mut err = None;
        for _ in 0..10_000 {
            match c.fill() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(matches!(err, Some(Error::Malformed(_))));
        assert_eq!(c.stats().max_buffer, MAX_BUFFER);
    }
}
