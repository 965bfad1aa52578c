//! Reporting Web Service `MessageTrace` scanner: OData v2 Atom XML → `Record`s.
//!
//! Owns: the query URL, the streaming scan of one Atom page and the OData error
//! body reader. The body is read in `READ_CHUNK` pieces; a small byte-level
//! splitter (`xml.rs`, with entity decoding and the property walk) finds where each child of `<feed>` ends (tags, comments, CDATA and
//! quoted attribute values are respected), and each complete child is then read:
//! `<entry>` becomes a record at once (its `properties` walked with the same
//! splitter — a second, full tokenizer cost half the scan), `<link rel="next">`
//! (parsed with `xmlparser`) the next page, everything else is ignored. An entry
//! wholly in the buffer when its `properties` tag is reached takes a fast path
//! (`FeedState::fast_entry`): the plain property list read in one specialised pass
//! and the record yielded at its `</entry>`; anything unusual falls back to the
//! general walk, which gives the same result and errors. Only the
//! current child is held, so memory is bounded by `MAX_BUFFER` whatever the page
//! size. Elements are matched by local name: prefixes and namespace URIs vary
//! between Microsoft's examples.
//! Must not: do IO besides reading the body, or yield a record before its
//! `</entry>` was seen.
//!
//! Field values: `m:null="true"` → null; `m:type` `Edm.Int*`/`Byte`/`SByte`/
//! `Decimal`/`Double`/`Single` → JSON number when the text is one (else text);
//! `Edm.Boolean` → bool; `Edm.DateTime[Offset]` and `Received`/`StartDate`/`EndDate`
//! → RFC 3339 UTC (`source::normalize_date`); `Size`/`Index` → number even without
//! `m:type`; everything else → text with entities and character references decoded
//! (borrowed from the body when it has no `&`). A property with child elements (an
//! OData complex type; MessageTrace has none) is left out.

use std::borrow::Cow;
use std::io::Read;

use xmlparser::{ElementEnd, Token, Tokenizer};

use super::xml::*;
use super::{recycle, resolve_url, with_query, Chunked, PageCtx, PageEnd, MAX_DEPTH};
use crate::error::{Error, Result};
use crate::record::{Record, Value};

/// `{reporting_url}?$filter=StartDate eq datetime'S' and EndDate eq datetime'E'`,
/// spaces written `%20`, quotes and `$` left as they are (RFC 3986 allows both in
/// a query; Microsoft's own examples send them so). `start`/`end` are the window
/// `[start, end)`: the service treats `EndDate` as inclusive, so a record received
/// exactly at `end` may come in two windows — the edge dedup (SPEC §3) drops it.
pub fn query_url(reporting_url: &str, start: i64, end: i64) -> String {
    let s = crate::time::odata_datetime(start);
    let e = crate::time::odata_datetime(end);
    with_query(
        reporting_url,
        &format!("$filter=StartDate%20eq%20datetime'{s}'%20and%20EndDate%20eq%20datetime'{e}'"),
    )
}

/// Scan one Atom page, calling `on_record` for each `<entry>` as soon as it is complete.
/// A body cut mid-entry or malformed is `Error::Malformed` (records before it were yielded).
pub fn scan_page<R: Read>(
    body: R,
    ctx: &PageCtx<'_>,
    on_record: &mut dyn FnMut(&Record<'_>) -> Result<()>,
) -> Result<PageEnd> {
    let mut input = Chunked::new(body);
    let mut feed = FeedState {
        base: None,
        next: None,
        records: 0,
        spare: Vec::new(),
        spans: Vec::new(),
    };
    let mut pos = 0usize; // scan position in input.data()
    let mut depth = 0usize; // element depth at pos
    let mut unit: Option<Unit> = None; // the open child of <feed> (or non-feed root)
    let mut root = Root::Before;
    loop {
        let data = input.data();
        let mark = markup(data, pos)?;
        match mark {
            Mark::More => {
                let keep = unit.as_ref().map_or(pos, |u| u.start);
                let at_end = pos >= data.len();
                input.consume(keep);
                pos = pos.saturating_sub(keep); // keep <= pos
                if let Some(u) = unit.as_mut() {
                    u.start = 0;
                }
                let in_unit = unit.is_some();
                let more = input.fill().map_err(|e| {
                    if in_unit {
                        e
                    } else {
                        super::outside_entries(e)
                    }
                })?;
                if !more {
                    if root == Root::Closed && at_end {
                        break;
                    }
                    return Err(Error::Malformed(match root {
                        Root::Before => "empty body, expected an Atom feed".to_string(),
                        _ => "body ends inside the feed (cut off?)".to_string(),
                    }));
                }
            }
            Mark::Text(end) => {
                if depth == 0 {
                    let text = data.get(pos..end).unwrap_or_default();
                    if !text
                        .iter()
                        .all(|c| c.is_ascii_whitespace() || matches!(c, 0xEF | 0xBB | 0xBF))
                    {
                        return Err(Error::Malformed("text outside the feed element".into()));
                    }
                }
                pos = end;
            }
            Mark::Skip(end) => pos = end,
            Mark::Start {
                end,
                name_len,
                empty,
            } => {
                let tag = data.get(pos..end).unwrap_or_default();
                match depth {
                    0 => {
                        if root != Root::Before {
                            return Err(Error::Malformed("a second root element".into()));
                        }
                        let tag = utf8(tag)?;
                        let local =
                            local_name(tag.get(1..name_len.saturating_add(1)).unwrap_or(""));
                        if local == "feed" {
                            feed.base = feed_base(tag, ctx.request_url)?;
                            root = if empty { Root::Closed } else { Root::Open };
                        } else {
                            // Not a feed (an OData error?): keep the whole root to explain it.
                            root = Root::Other;
                            unit = Some(Unit {
                                start: pos,
                                name_len,
                                props: None,
                            });
                            if empty {
                                return Err(not_a_feed(tag));
                            }
                        }
                    }
                    1 if root == Root::Open => {
                        if empty {
                            feed.child(tag, name_len, None, ctx, on_record)?;
                        } else {
                            unit = Some(Unit {
                                start: pos,
                                name_len,
                                props: None,
                            });
                        }
                    }
                    _ => {
                        if let Some(u) = unit.as_mut().filter(|u| u.props.is_none()) {
                            let qname = data
                                .get(pos.saturating_add(1)..)
                                .and_then(|q| q.get(..name_len));
                            let qname = qname.unwrap_or_default();
                            if local_bytes(qname) == b"properties" {
                                let at = Props {
                                    tag: pos,
                                    name_len,
                                    end,
                                    depth,
                                };
                                if !empty {
                                    if let Some(done) = feed.fast_entry(data, u, &at, on_record)? {
                                        // The whole entry is scanned and yielded.
                                        unit = None;
                                        depth = 1;
                                        pos = done;
                                        if pos >= READ_CONSUME {
                                            input.consume(pos);
                                            pos = 0;
                                        }
                                        continue;
                                    }
                                }
                                u.props = pos.checked_sub(u.start);
                            }
                        }
                    }
                }
                if !empty {
                    depth = depth.saturating_add(1);
                    if depth > MAX_DEPTH {
                        return Err(Error::Malformed("elements nested too deep".into()));
                    }
                }
                pos = end;
            }
            Mark::End { end, name } => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    Error::Malformed("closing tag without an open element".into())
                })?;
                let closes_unit =
                    (depth == 1 && root == Root::Open) || (depth == 0 && root == Root::Other);
                if closes_unit {
                    let u = unit.take().ok_or_else(|| {
                        Error::Malformed("closing tag without an open element".into())
                    })?;
                    let text = data.get(u.start..end).unwrap_or_default();
                    let open = text
                        .get(1..u.name_len.saturating_add(1))
                        .unwrap_or_default();
                    if data.get(name.0..name.1) != Some(open) {
                        return Err(Error::Malformed(format!(
                            "</{}> does not close <{}>",
                            String::from_utf8_lossy(data.get(name.0..name.1).unwrap_or_default()),
                            String::from_utf8_lossy(open)
                        )));
                    }
                    if root == Root::Other {
                        return Err(not_a_feed(utf8(text)?));
                    }
                    feed.child(text, u.name_len, u.props, ctx, on_record)?;
                } else if depth == 0 {
                    root = Root::Closed;
                }
                pos = end;
            }
        }
        if unit.is_none() && pos > 0 && pos >= READ_CONSUME {
            input.consume(pos);
            pos = 0;
        }
    }
    Ok(PageEnd {
        next_link: feed.next,
        records: feed.records,
        stats: input.stats(),
    })
}

/// Consume scanned bytes eagerly only past this many (saves `consume` calls; the
/// buffer is compacted lazily anyway).
const READ_CONSUME: usize = 4096;

/// Microsoft's error text from an error body (OData XML or JSON), for logs and errors.
pub fn error_message(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body)
        .ok()?
        .trim_start_matches('\u{feff}')
        .trim_start();
    if text.starts_with('{') {
        return super::json_error_message(text.as_bytes());
    }
    if !text.starts_with('<') {
        return None;
    }
    // <m:error><m:code>C</m:code><m:message xml:lang="en-US">M</m:message>…</m:error>
    let mut depth = 0usize;
    let mut error_depth = None;
    let mut current: Option<&str> = None;
    let (mut code, mut message) = (String::new(), String::new());
    for tok in Tokenizer::from(text) {
        let Ok(tok) = tok else { break };
        match tok {
            Token::ElementStart { local, .. } => {
                depth = depth.saturating_add(1);
                if error_depth.is_none() && local.as_str() == "error" {
                    error_depth = Some(depth);
                } else if error_depth.is_some_and(|d| d.saturating_add(1) == depth) {
                    current = Some(local.as_str());
                }
            }
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open => {}
                ElementEnd::Empty | ElementEnd::Close(..) => {
                    if error_depth.is_some_and(|d| d.saturating_add(1) == depth) {
                        current = None;
                    }
                    if error_depth == Some(depth) {
                        break;
                    }
                    depth = depth.saturating_sub(1);
                }
            },
            Token::Text { text } | Token::Cdata { text, .. } => {
                let raw = text.as_str();
                let decoded = if matches!(tok, Token::Cdata { .. }) {
                    Cow::Borrowed(raw)
                } else {
                    decode_xml(raw).unwrap_or(Cow::Borrowed(raw))
                };
                match current {
                    Some("code") if code.is_empty() => code.push_str(decoded.trim()),
                    Some("message") if message.is_empty() => message.push_str(decoded.trim()),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    error_depth?;
    super::join_code(&code, &message)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Before,
    Open,
    Other,
    Closed,
}

/// The start of the child of `<feed>` being buffered; its qualified name is
/// `data[start + 1 .. start + 1 + name_len]`.
struct Unit {
    start: usize,
    name_len: usize,
    /// Offset from `start` of its first `properties` start tag, noted on the way so
    /// that the entry's fields are found without walking the envelope again.
    props: Option<usize>,
}

struct FeedState {
    /// The absolute base for relative links (`xml:base` on `<feed>`).
    base: Option<String>,
    next: Option<String>,
    records: u64,
    /// The field vector, recycled from record to record.
    spare: Vec<(Cow<'static, str>, Value<'static>)>,
    /// Where the fast path found each property, recycled from entry to entry.
    spans: Vec<Span>,
}

/// The `properties` start tag of the open entry: at `tag`, name `name_len` bytes,
/// ending at `end`, its parent at element depth `depth` of the page.
struct Props {
    tag: usize,
    name_len: usize,
    end: usize,
    depth: usize,
}

/// One property as the fast path found it: byte ranges in the page buffer.
#[derive(Clone, Copy)]
struct Span {
    qname: (usize, usize),
    /// Where the local name starts in `qname` (after its last `:`).
    local: usize,
    /// The value of `m:type`, when present.
    edm: (usize, usize),
    /// The character data; `None` for an empty element (`<d:X/>`).
    text: Option<(usize, usize)>,
    null: bool,
}

impl FeedState {
    /// The fast path for the common entry, tried at its `properties` start tag: the
    /// flat `<d:Name m:type="…">text</d:Name>` list is read with a specialised byte
    /// walk (no tag stack, one pass per property, attributes read as the tag is
    /// found), the rest of the entry with `markup`, and the record is yielded at once
    /// — the entry is walked once instead of twice. `Some(end of the entry)` when it
    /// was yielded; `None` for anything unusual (the entry not all in `data` yet, a
    /// comment, CDATA, a child element, an entity the decoder rejects, odd spacing,
    /// non-UTF-8): the general path then reads the entry as before, with the same
    /// result and the same errors.
    fn fast_entry(
        &mut self,
        data: &[u8],
        unit: &Unit,
        at: &Props,
        on_record: &mut dyn FnMut(&Record<'_>) -> Result<()>,
    ) -> Result<Option<usize>> {
        let name_at = unit.start.saturating_add(1);
        let unit_name = data
            .get(name_at..name_at.saturating_add(unit.name_len))
            .unwrap_or_default();
        if local_bytes(unit_name) != b"entry" || at.depth.saturating_add(2) > MAX_DEPTH {
            return Ok(None);
        }
        let props_at = at.tag.saturating_add(1);
        let props_name = data
            .get(props_at..props_at.saturating_add(at.name_len))
            .unwrap_or_default();
        self.spans.clear();
        let Some(props_end) = walk_properties(data, at.end, props_name, &mut self.spans) else {
            return Ok(None);
        };
        let Some(entry_end) = entry_tail(data, props_end, at.depth, unit_name) else {
            return Ok(None);
        };
        let Some(text) = data
            .get(unit.start..entry_end)
            .and_then(|b| std::str::from_utf8(b).ok())
        else {
            return Ok(None);
        };
        // The attributes of `properties` itself, checked as the general path does.
        let attrs_from = props_at
            .saturating_add(at.name_len)
            .saturating_sub(unit.start);
        let attrs_to = at.end.saturating_sub(unit.start).saturating_sub(1);
        let attrs = text.get(attrs_from..attrs_to).unwrap_or_default();
        if attributes(attrs).any(|(name, _)| name.is_err()) {
            return Ok(None);
        }
        let off = unit.start;
        let span = |r: (usize, usize)| {
            text.get(r.0.saturating_sub(off)..r.1.saturating_sub(off))
                .unwrap_or_default()
        };
        let mut record = Record {
            fields: recycle(std::mem::take(&mut self.spare)),
        };
        let mut ok = true;
        for sp in &self.spans {
            let f = Field {
                name: span((sp.local, sp.qname.1)),
                null: sp.null,
                edm: span(sp.edm),
                text: sp.text.map_or(Acc::Empty, |t| Acc::Raw(span(t))),
                complex: false,
            };
            if finish_field(f, &mut record.fields).is_err() {
                ok = false;
                break;
            }
        }
        let yielded = ok && !record.fields.is_empty();
        if yielded {
            on_record(&record)?;
            self.records = self.records.saturating_add(1);
        }
        self.spare = recycle(record.fields);
        Ok(ok.then_some(entry_end))
    }

    /// A complete child of `<feed>`: an entry (yield it) or a link (remember `next`).
    fn child(
        &mut self,
        bytes: &[u8],
        name_len: usize,
        props: Option<usize>,
        ctx: &PageCtx<'_>,
        on_record: &mut dyn FnMut(&Record<'_>) -> Result<()>,
    ) -> Result<()> {
        let name = bytes.get(1..name_len.saturating_add(1)).unwrap_or_default();
        let local = local_bytes(name);
        match local {
            b"entry" => {
                let text = utf8(bytes)?;
                let mut record = Record {
                    fields: recycle(std::mem::take(&mut self.spare)),
                };
                scan_entry(text, props, &mut record.fields)
                    .map_err(|e| e.context(format!("entry {}", self.records.saturating_add(1))))?;
                let yielded = !record.fields.is_empty();
                if yielded {
                    on_record(&record)?;
                    self.records = self.records.saturating_add(1);
                }
                self.spare = recycle(record.fields);
            }
            b"link" => {
                let text = utf8(bytes)?;
                let (mut rel, mut href) = (None, None);
                for tok in Tokenizer::from(text) {
                    match tok.map_err(|e| Error::Malformed(format!("feed link: {e}")))? {
                        Token::Attribute {
                            prefix,
                            local,
                            value,
                            ..
                        } if prefix.is_empty() => match local.as_str() {
                            "rel" => rel = Some(value.as_str()),
                            "href" => href = Some(value.as_str()),
                            _ => {}
                        },
                        Token::ElementEnd { .. } => break,
                        _ => {}
                    }
                }
                let is_next = rel.is_some_and(|r| {
                    r == "next" || r == "http://www.iana.org/assignments/relation/next"
                });
                if let (true, Some(href)) = (is_next, href) {
                    let href = decode_xml(href)?;
                    let base = self.base.as_deref().unwrap_or(ctx.request_url);
                    self.next = Some(resolve_url(base, &href));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn not_a_feed(root: &str) -> Error {
    match error_message(root.as_bytes()) {
        Some(m) => Error::Malformed(format!("the service answered an error: {m}")),
        None => Error::Malformed("expected an Atom <feed> root element".into()),
    }
}

/// `xml:base` of the `<feed>` start tag, resolved against the request URL.
fn feed_base(tag: &str, request_url: &str) -> Result<Option<String>> {
    for tok in Tokenizer::from(tag) {
        match tok.map_err(|e| Error::Malformed(format!("feed element: {e}")))? {
            Token::Attribute {
                prefix,
                local,
                value,
                ..
            } if prefix.as_str() == "xml" && local.as_str() == "base" => {
                let v = decode_xml(value.as_str())?;
                return Ok(Some(resolve_url(request_url, &v)));
            }
            Token::ElementEnd { .. } => break,
            _ => {}
        }
    }
    Ok(None)
}

/// The properties of an entry from just after `<m:properties …>` (at `from`) to
/// just after its end tag (returned), each property into `spans`. Accepts only
/// the plain shape — `<q:Name a="v" …>text</q:Name>` or `<q:Name …/>`, `=` without
/// spaces, quoted values without `<`, any text between properties — and answers
/// `None` for everything else (also when `data` ends first), leaving it to the
/// general walk, which accepts the same entries with the same result.
fn walk_properties(data: &[u8], from: usize, props: &[u8], spans: &mut Vec<Span>) -> Option<usize> {
    let mut p = from;
    loop {
        // Text between properties: ignored, as the general walk does.
        let lt = p.checked_add(find_byte(data.get(p..)?, b'<')?)?;
        let after_lt = data.get(lt.checked_add(1)?..)?;
        match after_lt.first()? {
            b'/' => {
                let rest = after_lt.get(1..)?.strip_prefix(props)?;
                return (rest.first() == Some(&b'>'))
                    .then(|| lt.checked_add(props.len())?.checked_add(3))
                    .flatten();
            }
            b'!' | b'?' => return None,
            _ => {}
        }
        // The name, noting its last `:` on the way (the local name starts after it).
        let mut name_len = None;
        let mut local_at = 0usize;
        for (k, &c) in after_lt.iter().enumerate() {
            if c.is_ascii_whitespace() || c == b'/' || c == b'>' {
                name_len = Some(k);
                break;
            }
            if c == b':' {
                local_at = k.checked_add(1)?;
            }
        }
        let name_len = name_len.filter(|&n| n > 0)?;
        let qname = (
            lt.checked_add(1)?,
            lt.checked_add(1)?.checked_add(name_len)?,
        );
        let mut sp = Span {
            local: qname.0.checked_add(local_at)?,
            qname,
            edm: (0, 0),
            text: None,
            null: false,
        };
        // Attributes, to the `>` or `/>` that ends the tag.
        let mut i = qname.1;
        let empty = loop {
            let c = *data.get(i)?;
            if c.is_ascii_whitespace() {
                i = i.checked_add(1)?;
                continue;
            }
            match c {
                b'>' => break false,
                b'/' => {
                    if data.get(i.checked_add(1)?) != Some(&b'>') {
                        return None;
                    }
                    i = i.checked_add(1)?;
                    break true;
                }
                b'"' | b'\'' | b'=' | b'<' => return None,
                _ => {}
            }
            // The previous byte must be a space: `a="1"b="2"` is malformed.
            if !data.get(i.checked_sub(1)?)?.is_ascii_whitespace() {
                return None;
            }
            let name_from = i;
            let eq = i.checked_add(data.get(i..)?.iter().position(|&c| {
                c == b'='
                    || c.is_ascii_whitespace()
                    || matches!(c, b'"' | b'\'' | b'<' | b'>' | b'/')
            })?)?;
            if data.get(eq) != Some(&b'=') {
                return None;
            }
            let q = *data.get(eq.checked_add(1)?)?;
            if q != b'"' && q != b'\'' {
                return None;
            }
            let v_from = eq.checked_add(2)?;
            let v_to = v_from.checked_add(find_byte(data.get(v_from..)?, q)?)?;
            let value = data.get(v_from..v_to)?;
            if value.contains(&b'<') {
                return None;
            }
            match local_bytes(data.get(name_from..eq)?) {
                b"null" => sp.null = std::str::from_utf8(value).map(str::trim) == Ok("true"),
                b"type" => sp.edm = (v_from, v_to),
                _ => {}
            }
            i = v_to.checked_add(1)?;
            // After a value: a space, `>` or `/>`.
            let next = *data.get(i)?;
            if !(next.is_ascii_whitespace() || next == b'>' || next == b'/') {
                return None;
            }
        };
        p = i.checked_add(1)?;
        if !empty {
            let lt = p.checked_add(find_byte(data.get(p..)?, b'<')?)?;
            let close = data.get(lt.checked_add(1)?..)?.strip_prefix(b"/")?;
            let rest = close.strip_prefix(data.get(qname.0..qname.1)?)?;
            if rest.first() != Some(&b'>') {
                return None;
            }
            if lt > p {
                sp.text = Some((p, lt));
            }
            p = lt.checked_add(name_len)?.checked_add(3)?;
        }
        spans.push(sp);
    }
}

/// From the end of `properties` (at `from`, inside elements to page depth `depth`)
/// to the end of the entry named `entry`, with `markup`: the end of `</entry>`, or
/// `None` when `data` ends first or anything would be an error (the general walk
/// then reports it).
fn entry_tail(data: &[u8], from: usize, depth: usize, entry: &[u8]) -> Option<usize> {
    let mut pos = from;
    let mut depth = depth;
    loop {
        match markup(data, pos).ok()? {
            Mark::More => return None,
            Mark::Text(end) | Mark::Skip(end) => pos = end,
            Mark::Start { end, empty, .. } => {
                if !empty {
                    depth = depth.checked_add(1)?;
                    if depth > MAX_DEPTH {
                        return None;
                    }
                }
                pos = end;
            }
            Mark::End { end, name } => {
                depth = depth.checked_sub(1)?;
                if depth <= 1 {
                    return (depth == 1 && data.get(name.0..name.1) == Some(entry)).then_some(end);
                }
                pos = end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PageCtx<'static> {
        PageCtx {
            request_url:
                "https://r.example/ecp/reportingwebservice/reporting.svc/MessageTrace?$filter=x",
            window_start: 0,
            window_end: 900,
        }
    }

    type Fields = Vec<(String, Value<'static>)>;

    fn scan(body: &str) -> Result<(Vec<Fields>, PageEnd)> {
        let mut out = Vec::new();
        let end = scan_page(body.as_bytes(), &ctx(), &mut |r| {
            out.push(
                r.fields
                    .iter()
                    .map(|(n, v)| {
                        let v = match v {
                            Value::Null => Value::Null,
                            Value::Bool(b) => Value::Bool(*b),
                            Value::Text(t) => Value::Text(Cow::Owned(t.to_string())),
                            Value::Number(t) => Value::Number(Cow::Owned(t.to_string())),
                            Value::Raw(t) => Value::Raw(Cow::Owned(t.to_string())),
                        };
                        (n.to_string(), v)
                    })
                    .collect(),
            );
            Ok(())
        })?;
        Ok((out, end))
    }

    #[test]
    fn decodes_entities() {
        assert!(matches!(
            decode_xml("plain").unwrap(),
            Cow::Borrowed("plain")
        ));
        assert_eq!(
            decode_xml("a &amp; b &lt;&gt;&quot;&apos;").unwrap(),
            "a & b <>\"'"
        );
        assert_eq!(decode_xml("caf&#233; &#x1F600;").unwrap(), "café 😀");
        assert!(decode_xml("&bogus;").is_err());
        assert!(decode_xml("&#xD800;").is_err());
        assert!(decode_xml("&#0;").is_err());
        assert!(decode_xml("a & b").is_err());
    }

    #[test]
    fn query_url_shape() {
        let u = query_url("https://r.example/MessageTrace", 0, 900);
        assert_eq!(
            u,
            "https://r.example/MessageTrace?$filter=StartDate%20eq%20datetime'1970-01-01T00:00:00'%20and%20EndDate%20eq%20datetime'1970-01-01T00:15:00'"
        );
    }

    #[test]
    fn scans_minimal_feed() {
        let body = r#"<?xml version="1.0"?><a:feed xmlns:a="http://www.w3.org/2005/Atom" xml:base="https://r.example/svc/">
<!-- c --><a:entry><a:content><m:properties><d:Subject>x &amp; <![CDATA[<y>]]></d:Subject><d:MessageId m:null="true"/><d:Size>12</d:Size><d:Received>2026-11-24T10:00:00.1234567</d:Received></m:properties></a:content></a:entry>
<a:link rel="next" href="MessageTrace?$skiptoken=1&amp;x=2"/></a:feed>"#;
        let (recs, end) = scan(body).unwrap();
        assert_eq!(
            end.next_link.as_deref(),
            Some("https://r.example/svc/MessageTrace?$skiptoken=1&x=2")
        );
        assert_eq!(recs.len(), 1);
        assert_eq!(
            recs[0][0],
            ("Subject".into(), Value::Text("x & <y>".into()))
        );
        assert_eq!(recs[0][1], ("MessageId".into(), Value::Null));
        assert_eq!(recs[0][2], ("Size".into(), Value::Number("12".into())));
        assert_eq!(
            recs[0][3].1,
            Value::Text("2026-11-24T10:00:00.1234567Z".into())
        );
    }

    #[test]
    fn rejects_bad_bodies() {
        for bad in [
            "",
            "<feed>",
            "<feed><entry></feed>",
            "<feed></entry></feed>",
            "<feed><entry><m:properties><d:A>1</d:B></m:properties></entry></feed>",
            "<feed/><feed/>",
            "text<feed/>",
            "<!DOCTYPE x><feed/>",
            "<feed><entry><m:properties><d:A>&nope;</d:A></m:properties></entry></feed>",
        ] {
            assert!(
                matches!(scan(bad), Err(e) if matches!(e.root(), Error::Malformed(_))),
                "{bad}"
            );
        }
        assert!(scan("<feed/>").is_ok());
    }

    #[test]
    fn find_byte_matches_a_byte_loop() {
        let hay: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37) ^ 0x55).collect();
        for start in 0..hay.len() {
            for b in [b'<', b'>', 0, 0x80, 0xFF, hay[start]] {
                let h = &hay[start..];
                assert_eq!(
                    find_byte(h, b),
                    h.iter().position(|&c| c == b),
                    "{start} {b}"
                );
            }
        }
        assert_eq!(find_byte(b"", b'<'), None);
        assert_eq!(find_byte(b"\x01\x01\x01\x01\x01\x01\x01<", b'<'), Some(7));
        assert_eq!(find_byte(b"\x3d\x3c", b'<'), Some(1));
    }

    #[test]
    fn properties_walk_attributes_and_envelope() {
        // Attributes in either quote, spaces around `=`, a `>` inside a value, a
        // `properties` tag inside a comment of the envelope (skipped), a comment and
        // a processing instruction splitting a value.
        let body = r#"<feed><entry><!-- <m:properties><d:Fake>1</d:Fake></m:properties> --><id a='1>2'>x</id>
<content><m:properties x="y"><d:Size m:type = 'Edm.Int32' >7</d:Size><d:ToIP m:null="true" m:type="Edm.String"/><d:Subject>a<!-- c -->b<?pi x?>c</d:Subject></m:properties></content></entry></feed>"#;
        let (recs, _) = scan(body).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0][0], ("Size".into(), Value::Number("7".into())));
        assert_eq!(recs[0][1], ("ToIP".into(), Value::Null));
        assert_eq!(recs[0][2], ("Subject".into(), Value::Text("abc".into())));
        assert_eq!(recs[0].len(), 3);
        // An entry without properties yields nothing.
        assert!(scan("<feed><entry><id>1</id></entry></feed>")
            .unwrap()
            .0
            .is_empty());
        for bad in [
            r#"<feed><entry><m:properties><d:A m:null>1</d:A></m:properties></entry></feed>"#,
            r#"<feed><entry><m:properties><d:A m:null=true>1</d:A></m:properties></entry></feed>"#,
            r#"<feed><entry><m:properties><d:A x="1"y="2">1</d:A></m:properties></entry></feed>"#,
            r#"<feed><entry><m:properties><d:A>1</d:A></x:properties></entry></feed>"#,
        ] {
            assert!(
                matches!(scan(bad), Err(e) if matches!(e.root(), Error::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_bodies() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><m:error xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"><m:code>E1</m:code><m:message xml:lang="en-US">Bad &amp; worse</m:message></m:error>"#;
        assert_eq!(
            error_message(xml.as_bytes()).as_deref(),
            Some("E1: Bad & worse")
        );
        let e = scan(xml).unwrap_err();
        assert!(e.to_string().contains("Bad & worse"), "{e}");
        assert_eq!(error_message(b"nothing"), None);
    }
}
