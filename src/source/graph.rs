//! Microsoft Graph `exchangeMessageTrace` scanner: one JSON page → `Record`s.
//!
//! Owns: the query URL, the streaming scan of a page
//! `{"@odata.context":…,"value":[{…},…],"@odata.nextLink":…}` (members in any
//! order) and the Graph error body reader. The body is read in `READ_CHUNK`
//! pieces; a hand-written top-level state machine walks the outer object, and for
//! each element of `value` a resumable extent finder (string/escape state and
//! bracket depth) waits until the element is complete, then a small recursive
//! parser turns it into a record. Only the current element is held, so memory is
//! bounded by `MAX_BUFFER`. Must not: do IO besides reading the body, or yield a
//! record before its closing `}` was seen.
//!
//! Mapping (SPEC §4): `id`→MessageTraceId, `messageId`→MessageId,
//! `receivedDateTime`→Received (RFC 3339 UTC), `senderAddress`, `recipientAddress`,
//! `subject`, `status` (first letter upper-cased), `size` (number), `fromIP`, `toIP`
//! under their Reporting Web Service names; other members keep their own names
//! (objects and arrays as `Value::Raw` verbatim JSON); then `StartDate`/`EndDate`
//! carry the query window. Strings are unescaped (`\uXXXX` with surrogate pairs;
//! a lone surrogate becomes U+FFFD) and borrowed from the body when they hold no
//! escape. Raw control characters inside strings are `Error::Malformed`.

use std::borrow::Cow;
use std::io::Read;

use super::{
    normalize_date, recycle, resolve_url, with_query, Chunked, PageCtx, PageEnd, MAX_DEPTH,
};
use crate::error::{Error, Result};
use crate::record::{Record, Value};

/// `{graph_url}?$filter=receivedDateTime ge S and receivedDateTime le E&$top=N`,
/// spaces as `%20`; both bounds inclusive, whole seconds `YYYY-MM-DDThh:mm:ssZ`
/// as Microsoft documents (a record received exactly at `end` may come in two
/// windows; the edge dedup of SPEC §3 drops the repeat). `top` is 1–5000.
pub fn query_url(graph_url: &str, start: i64, end: i64, top: u32) -> String {
    let s = crate::time::rfc3339(start);
    let e = crate::time::rfc3339(end);
    with_query(
        graph_url,
        &format!(
            "$filter=receivedDateTime%20ge%20{s}%20and%20receivedDateTime%20le%20{e}&$top={}",
            top.clamp(1, 5000)
        ),
    )
}

/// Scan one JSON page, calling `on_record` for each element of `value` as soon as it is complete.
/// A body cut mid-entry or malformed is `Error::Malformed` (records before it were yielded).
pub fn scan_page<R: Read>(
    body: R,
    ctx: &PageCtx<'_>,
    on_record: &mut dyn FnMut(&Record<'_>) -> Result<()>,
) -> Result<PageEnd> {
    let start_date = crate::time::rfc3339(ctx.window_start);
    let end_date = crate::time::rfc3339(ctx.window_end);
    let mut input = Chunked::new(body);
    let mut state = State::Open;
    let mut scan = Extent::default();
    let mut pos = 0usize;
    let mut next_link = None;
    let mut records = 0u64;
    let mut spare: Vec<(Cow<'static, str>, Value<'static>)> = Vec::new();
    // A UTF-8 byte order mark may open the body.
    while input.data().len() < 3 && input.fill()? {}
    if input.data().starts_with(b"\xEF\xBB\xBF") {
        input.consume(3);
    }
    loop {
        let data = input.data();
        match step(data, &mut pos, &mut state, &mut scan)? {
            Step::Continue => {}
            Step::More => {
                input.consume(pos);
                pos = 0;
                if !input.fill()? {
                    if state == State::Done {
                        break;
                    }
                    return Err(Error::Malformed(if state == State::Open {
                        "empty body, expected a JSON object".to_string()
                    } else {
                        "body ends inside the JSON page (cut off?)".to_string()
                    }));
                }
            }
            Step::Member(key, range) => {
                let text = std::str::from_utf8(data.get(range.0..range.1).unwrap_or_default())
                    .map_err(|e| Error::Malformed(format!("body is not UTF-8: {e}")))?;
                match key {
                    Key::NextLink => {
                        let mut p = Parser::new(text);
                        match p.value(0)? {
                            Value::Text(t) => next_link = Some(resolve_url(ctx.request_url, &t)),
                            Value::Null => next_link = None,
                            _ => {
                                return Err(Error::Malformed(
                                    "@odata.nextLink is not a string".into(),
                                ))
                            }
                        }
                    }
                    Key::Error => {
                        let msg =
                            super::json_error_message(format!("{{\"error\":{text}}}").as_bytes())
                                .unwrap_or_else(|| "no message".into());
                        return Err(Error::Malformed(format!("graph answered an error: {msg}")));
                    }
                    Key::Value | Key::Other => {}
                }
            }
            Step::Element(range) => {
                let text = std::str::from_utf8(data.get(range.0..range.1).unwrap_or_default())
                    .map_err(|e| Error::Malformed(format!("body is not UTF-8: {e}")))?;
                let mut record = Record {
                    fields: recycle(std::mem::take(&mut spare)),
                };
                element(text, &start_date, &end_date, &mut record.fields).map_err(|e| {
                    e.context(format!("element {} of value", records.saturating_add(1)))
                })?;
                on_record(&record)?;
                records = records.saturating_add(1);
                spare = recycle(record.fields);
            }
        }
    }
    Ok(PageEnd {
        next_link,
        records,
        stats: input.stats(),
    })
}

/// Microsoft's error text from an error body (OData XML or JSON), for logs and errors.
pub fn error_message(body: &[u8]) -> Option<String> {
    super::json_error_message(body).or_else(|| super::reporting::error_message(body))
}

/// Which top-level member a value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Value,
    NextLink,
    Error,
    Other,
}

/// Where the top-level walk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the outer `{`.
    Open,
    /// After `{`: a key or `}`.
    FirstKey,
    /// After `,`: a key.
    Key,
    /// After a key: `:`.
    Colon(Key),
    /// After `:`: the member's value.
    Val(Key),
    /// After a member: `,` or `}`.
    AfterMember,
    /// After `[` of `value`: an element or `]`.
    FirstElem,
    /// After `,` in `value`: an element.
    Elem,
    /// After an element: `,` or `]`.
    AfterElem,
    /// After the outer `}`: only whitespace may follow.
    Done,
}

enum Step {
    Continue,
    More,
    /// A complete top-level member value at `data[.0...1]`.
    Member(Key, (usize, usize)),
    /// A complete element of `value`.
    Element((usize, usize)),
}

fn skip_ws(data: &[u8], pos: &mut usize) -> Option<u8> {
    while let Some(&c) = data.get(*pos) {
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            *pos = pos.saturating_add(1);
        } else {
            return Some(c);
        }
    }
    None
}

fn unexpected(c: u8, what: &str) -> Error {
    Error::Malformed(format!(
        "unexpected {:?} in the JSON page, expected {what}",
        char::from(c)
    ))
}

/// Advance the top-level walk by one token, or ask for more bytes.
fn step(data: &[u8], pos: &mut usize, state: &mut State, scan: &mut Extent) -> Result<Step> {
    let Some(c) = skip_ws(data, pos) else {
        return Ok(Step::More);
    };
    match *state {
        State::Open => {
            if c != b'{' {
                return Err(unexpected(c, "'{'"));
            }
            *pos = pos.saturating_add(1);
            *state = State::FirstKey;
        }
        State::FirstKey | State::Key => {
            if c == b'}' && *state == State::FirstKey {
                *pos = pos.saturating_add(1);
                *state = State::Done;
                return Ok(Step::Continue);
            }
            if c != b'"' {
                return Err(unexpected(c, "a member name"));
            }
            let Some(len) = scan.find(data.get(*pos..).unwrap_or_default())? else {
                return Ok(Step::More);
            };
            // `len` spans both quotes: the name is between them.
            let name_end = pos.saturating_add(len).saturating_sub(1);
            let raw = data
                .get(pos.saturating_add(1)..name_end)
                .unwrap_or_default();
            let key = match raw {
                b"value" => Key::Value,
                b"@odata.nextLink" => Key::NextLink,
                b"error" => Key::Error,
                _ => Key::Other,
            };
            *scan = Extent::default();
            *pos = pos.saturating_add(len);
            *state = State::Colon(key);
        }
        State::Colon(key) => {
            if c != b':' {
                return Err(unexpected(c, "':'"));
            }
            *pos = pos.saturating_add(1);
            *state = State::Val(key);
        }
        State::Val(Key::Value) if c == b'[' => {
            *pos = pos.saturating_add(1);
            *state = State::FirstElem;
        }
        State::Val(key) => {
            let Some(len) = scan.find(data.get(*pos..).unwrap_or_default())? else {
                return Ok(Step::More);
            };
            if key == Key::Value && c != b'n' {
                return Err(Error::Malformed("value is not an array".into()));
            }
            let range = (*pos, pos.saturating_add(len));
            *scan = Extent::default();
            *pos = pos.saturating_add(len);
            *state = State::AfterMember;
            return Ok(Step::Member(key, range));
        }
        State::AfterMember => {
            *pos = pos.saturating_add(1);
            *state = match c {
                b',' => State::Key,
                b'}' => State::Done,
                _ => return Err(unexpected(c, "',' or '}'")),
            };
        }
        State::FirstElem | State::Elem => {
            if c == b']' && *state == State::FirstElem {
                *pos = pos.saturating_add(1);
                *state = State::AfterMember;
                return Ok(Step::Continue);
            }
            if c != b'{' {
                return Err(unexpected(c, "an object in value"));
            }
            let Some(len) = scan.find(data.get(*pos..).unwrap_or_default())? else {
                return Ok(Step::More);
            };
            let range = (*pos, pos.saturating_add(len));
            *scan = Extent::default();
            *pos = pos.saturating_add(len);
            *state = State::AfterElem;
            return Ok(Step::Element(range));
        }
        State::AfterElem => {
            *pos = pos.saturating_add(1);
            *state = match c {
                b',' => State::Elem,
                b']' => State::AfterMember,
                _ => return Err(unexpected(c, "',' or ']'")),
            };
        }
        State::Done => return Err(unexpected(c, "the end of the body")),
    }
    Ok(Step::Continue)
}

/// Resumable search for the end of one JSON value starting at offset 0 of the
/// given slice: remembers how far it got, so bytes arriving one at a time are
/// looked at once.
#[derive(Debug, Default)]
struct Extent {
    off: usize,
    depth: usize,
    in_str: bool,
    esc: bool,
}

impl Extent {
    /// The length of the value, or `None` when it is not complete yet.
    fn find(&mut self, s: &[u8]) -> Result<Option<usize>> {
        while let Some(&c) = s.get(self.off) {
            if self.in_str && !self.esc {
                // Jump over the plain run of the string.
                let run = super::json_run(s.get(self.off..).unwrap_or_default());
                self.off = self.off.saturating_add(run);
                let Some(&c) = s.get(self.off) else {
                    break;
                };
                self.off = self.off.saturating_add(1);
                if c == b'\\' {
                    self.esc = true;
                } else if c == b'"' {
                    self.in_str = false;
                    if self.depth == 0 {
                        return Ok(Some(self.off));
                    }
                }
                // A control byte: left for the parser to reject.
                continue;
            }
            self.off = self.off.saturating_add(1);
            if self.in_str {
                if self.esc {
                    self.esc = false;
                } else if c == b'\\' {
                    self.esc = true;
                } else if c == b'"' {
                    self.in_str = false;
                    if self.depth == 0 {
                        return Ok(Some(self.off));
                    }
                }
                continue;
            }
            match c {
                b'"' => self.in_str = true,
                b'{' | b'[' => self.depth = self.depth.saturating_add(1),
                b'}' | b']' => {
                    if self.depth == 0 {
                        // The end of a scalar at top level: not part of it.
                        return Ok(Some(self.off.saturating_sub(1)));
                    }
                    self.depth = self.depth.saturating_sub(1); // not 0: checked above
                    if self.depth == 0 {
                        return Ok(Some(self.off));
                    }
                }
                b',' | b' ' | b'\t' | b'\n' | b'\r' if self.depth == 0 => {
                    return Ok(Some(self.off.saturating_sub(1)));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

/// One element of `value` into record fields.
fn element<'a>(
    text: &'a str,
    start_date: &'a str,
    end_date: &'a str,
    fields: &mut Vec<(Cow<'a, str>, Value<'a>)>,
) -> Result<()> {
    let mut p = Parser::new(text);
    p.expect(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.i = p.i.saturating_add(1);
    } else {
        loop {
            p.ws();
            let key = p.string()?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            let value = p.value(0)?;
            fields.push(map_field(key, value));
            p.ws();
            match p.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(Error::Malformed("expected ',' or '}' in an element".into())),
            }
        }
    }
    p.ws();
    if p.i != p.b.len() {
        return Err(Error::Malformed("trailing bytes after an element".into()));
    }
    fields.push((
        Cow::Borrowed("StartDate"),
        Value::Text(Cow::Borrowed(start_date)),
    ));
    fields.push((
        Cow::Borrowed("EndDate"),
        Value::Text(Cow::Borrowed(end_date)),
    ));
    Ok(())
}

fn map_field<'a>(key: Cow<'a, str>, value: Value<'a>) -> (Cow<'a, str>, Value<'a>) {
    let name = match key.as_ref() {
        "id" => "MessageTraceId",
        "messageId" => "MessageId",
        "senderAddress" => "SenderAddress",
        "recipientAddress" => "RecipientAddress",
        "subject" => "Subject",
        "fromIP" => "FromIP",
        "toIP" => "ToIP",
        "receivedDateTime" => {
            let v = match value {
                Value::Text(t) => Value::Text(normalize_date(t)),
                other => other,
            };
            return (Cow::Borrowed("Received"), v);
        }
        "status" => {
            let v = match value {
                Value::Text(t) => Value::Text(upper_first(t)),
                other => other,
            };
            return (Cow::Borrowed("Status"), v);
        }
        "size" => {
            let v = match value {
                Value::Text(t) if super::is_json_number(&t) => Value::Number(t),
                other => other,
            };
            return (Cow::Borrowed("Size"), v);
        }
        _ => return (key, value),
    };
    (Cow::Borrowed(name), value)
}

/// `filteredAsSpam` → `FilteredAsSpam`; the known statuses need no allocation.
fn upper_first(t: Cow<'_, str>) -> Cow<'_, str> {
    let known = match t.as_ref() {
        "delivered" => "Delivered",
        "pending" => "Pending",
        "failed" => "Failed",
        "expanded" => "Expanded",
        "quarantined" => "Quarantined",
        "filteredAsSpam" => "FilteredAsSpam",
        "gettingStatus" => "GettingStatus",
        "none" => "None",
        "unknownFutureValue" => "UnknownFutureValue",
        _ => "",
    };
    if !known.is_empty() {
        return Cow::Borrowed(known);
    }
    let mut chars = t.chars();
    match chars.next() {
        Some(f) if f.is_lowercase() => Cow::Owned(f.to_uppercase().chain(chars).collect()),
        _ => t,
    }
}

#[cold]
fn expected(c: u8) -> Error {
    Error::Malformed(format!("expected {:?} in JSON", char::from(c)))
}

/// A strict JSON parser over one complete element, borrowing from it.
struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    /// A string since the last reset held a lone surrogate escape.
    lone: bool,
}

impl<'a> Parser<'a> {
    fn new(s: &'a str) -> Self {
        Parser {
            s,
            b: s.as_bytes(),
            i: 0,
            lone: false,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    // why: `i` steps only past a byte `peek` found, so it stays <= `b.len()`.
    #[allow(clippy::arithmetic_side_effects)]
    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.i += usize::from(c.is_some());
        c
    }

    // why: `i` steps only past a byte `peek` found, so it stays <= `b.len()`.
    #[allow(clippy::arithmetic_side_effects)]
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// Inlined, its error built out of line: called for every string and member
    /// (Graph scan 11,011 -> 10,443 Ir/record; tests/bench/PROFILE.md).
    #[inline(always)]
    fn expect(&mut self, c: u8) -> Result<()> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(expected(c))
        }
    }

    fn lit(&mut self, word: &[u8]) -> Result<()> {
        if self.b.get(self.i..).is_some_and(|r| r.starts_with(word)) {
            self.i = self.i.saturating_add(word.len());
            Ok(())
        } else {
            Err(Error::Malformed("bad JSON literal".into()))
        }
    }

    /// One JSON value; objects and arrays (depth-limited) become `Raw`.
    fn value(&mut self, depth: usize) -> Result<Value<'a>> {
        match self.peek() {
            Some(b'"') => Ok(Value::Text(self.string()?)),
            Some(b'{' | b'[') => {
                let from = self.i;
                let outer_lone = std::mem::take(&mut self.lone);
                self.nested(depth)?;
                let raw = self.s.get(from..self.i).unwrap_or("");
                let raw = if self.lone {
                    Cow::Owned(replace_lone_surrogates(raw))
                } else {
                    Cow::Borrowed(raw)
                };
                self.lone |= outer_lone;
                Ok(Value::Raw(raw))
            }
            Some(b't') => self.lit(b"true").map(|()| Value::Bool(true)),
            Some(b'f') => self.lit(b"false").map(|()| Value::Bool(false)),
            Some(b'n') => self.lit(b"null").map(|()| Value::Null),
            Some(b'-' | b'0'..=b'9') => {
                let from = self.i;
                while matches!(
                    self.peek(),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.i = self.i.saturating_add(1);
                }
                let n = self.s.get(from..self.i).unwrap_or("");
                if !super::is_json_number(n) {
                    return Err(Error::Malformed(format!("bad JSON number {n:?}")));
                }
                Ok(Value::Number(Cow::Borrowed(n)))
            }
            _ => Err(Error::Malformed("expected a JSON value".into())),
        }
    }

    /// Validate an object or array without keeping it.
    fn nested(&mut self, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(Error::Malformed("JSON nested too deep".into()));
        }
        let close = if self.next() == Some(b'{') {
            b'}'
        } else {
            b']'
        };
        self.ws();
        if self.peek() == Some(close) {
            self.i = self.i.saturating_add(1);
            return Ok(());
        }
        loop {
            self.ws();
            if close == b'}' {
                self.string()?;
                self.ws();
                self.expect(b':')?;
                self.ws();
            }
            self.value(depth.saturating_add(1))?;
            self.ws();
            match self.next() {
                Some(b',') => continue,
                Some(c) if c == close => return Ok(()),
                _ => {
                    return Err(Error::Malformed(
                        "expected ',' or a closing bracket in JSON".into(),
                    ))
                }
            }
        }
    }

    /// A string literal, unescaped; borrowed when it holds no escape.
    ///
    /// Inlined for the common case (no escape: one plain run, then the quote), the
    /// rest out of line: a call per string cost a tenth of the Graph scan.
    #[inline(always)]
    fn string(&mut self) -> Result<Cow<'a, str>> {
        self.expect(b'"')?;
        let from = self.i;
        let run = super::json_run(self.b.get(self.i..).unwrap_or_default());
        if self.b.get(self.i.saturating_add(run)) == Some(&b'"') {
            let s = self.s.get(from..self.i.saturating_add(run)).unwrap_or("");
            self.i = self.i.saturating_add(run).saturating_add(1);
            return Ok(Cow::Borrowed(s));
        }
        self.string_rest(from)
    }

    /// The string that began at `from` (after its quote), read on from `self.i`.
    #[inline(never)]
    fn string_rest(&mut self, from: usize) -> Result<Cow<'a, str>> {
        loop {
            let run = super::json_run(self.b.get(self.i..).unwrap_or_default());
            self.i = self.i.saturating_add(run);
            match self.peek() {
                None => return Err(Error::Malformed("unterminated JSON string".into())),
                Some(b'"') => {
                    let s = self.s.get(from..self.i).unwrap_or("");
                    self.i = self.i.saturating_add(1);
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(0..=0x1f) => {
                    return Err(Error::Malformed(
                        "control character in a JSON string".into(),
                    ))
                }
                Some(_) => self.i = self.i.saturating_add(1),
            }
        }
        // Unescaped text is never longer than its escaped form: one allocation.
        let mut out = String::with_capacity(self.raw_len(from));
        out.push_str(self.s.get(from..self.i).unwrap_or(""));
        loop {
            let run = self.i;
            let plain = super::json_run(self.b.get(self.i..).unwrap_or_default());
            self.i = self.i.saturating_add(plain);
            out.push_str(self.s.get(run..self.i).unwrap_or(""));
            match self.next() {
                Some(b'"') => return Ok(Cow::Owned(out)),
                Some(b'\\') => {}
                Some(_) => {
                    return Err(Error::Malformed(
                        "control character in a JSON string".into(),
                    ))
                }
                None => return Err(Error::Malformed("unterminated JSON string".into())),
            }
            let c = match self.next() {
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'/') => '/',
                Some(b'b') => '\u{8}',
                Some(b'f') => '\u{c}',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => {
                    let hi = self.hex4()?;
                    if (0xD800..0xDC00).contains(&hi) {
                        // A high surrogate: pair it with a following `\uDC00`–`\uDFFF`.
                        let save = self.i;
                        let lo = if self.b.get(self.i..).is_some_and(|r| r.starts_with(b"\\u")) {
                            self.i = self.i.saturating_add(2);
                            self.hex4()?
                        } else {
                            0
                        };
                        if (0xDC00..0xE000).contains(&lo) {
                            // hi in D800..DC00 and lo in DC00..E000: their low 10 bits are the payload.
                            char::from_u32(0x10000 | (hi & 0x3FF).wrapping_shl(10) | (lo & 0x3FF))
                                .unwrap_or('\u{FFFD}')
                        } else {
                            self.i = save;
                            self.lone = true;
                            '\u{FFFD}'
                        }
                    } else {
                        char::from_u32(hi).unwrap_or_else(|| {
                            self.lone = true;
                            '\u{FFFD}'
                        })
                    }
                }
                _ => return Err(Error::Malformed("bad escape in a JSON string".into())),
            };
            out.push(c);
        }
    }

    /// Bytes from `from` to the closing quote of the string being read (to the end
    /// of the element when it is unterminated): a capacity, not a check.
    fn raw_len(&self, from: usize) -> usize {
        let mut i = self.i;
        loop {
            i = i.saturating_add(super::json_run(self.b.get(i..).unwrap_or_default()));
            match self.b.get(i) {
                Some(b'\\') => i = i.saturating_add(2),
                Some(0..=0x1f) => i = i.saturating_add(1),
                _ => return i.min(self.b.len()).saturating_sub(from),
            }
        }
    }

    /// The four hex digits of a `\u` escape, folded by hand (`from_str_radix` and a
    /// separate digit check cost three times as much; half of Graph's records hold
    /// escapes).
    fn hex4(&mut self) -> Result<u32> {
        let digits = self
            .b
            .get(self.i..)
            .and_then(|r| r.first_chunk::<4>())
            .ok_or_else(|| Error::Malformed("bad \\u escape in a JSON string".into()))?;
        let mut v = 0u32;
        for &c in digits {
            let d = match c {
                b'0'..=b'9' => c.wrapping_sub(b'0'),
                b'a'..=b'f' => c.wrapping_sub(b'a').wrapping_add(10),
                b'A'..=b'F' => c.wrapping_sub(b'A').wrapping_add(10),
                _ => return Err(Error::Malformed("bad \\u escape in a JSON string".into())),
            };
            v = v.wrapping_shl(4) | u32::from(d);
        }
        self.i = self.i.saturating_add(4);
        Ok(v)
    }
}

/// Valid JSON text with each lone surrogate escape (`\ud800` without its pair)
/// written `\ufffd`, as lone surrogates are decoded elsewhere: many JSON readers
/// refuse them.
fn replace_lone_surrogates(raw: &str) -> String {
    let b = raw.as_bytes();
    let hex = |at: usize| -> Option<u32> {
        let h = raw.get(at..at.checked_add(4)?)?;
        if h.bytes().all(|c| c.is_ascii_hexdigit()) {
            u32::from_str_radix(h, 16).ok()
        } else {
            None
        }
    };
    let mut out = String::with_capacity(raw.len());
    let mut run = 0;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c != b'\\' {
            i = i.saturating_add(1);
            continue;
        }
        if b.get(i.saturating_add(1)) != Some(&b'u') {
            i = i.saturating_add(2); // `\\`, `\"`, …: never the start of a `\u`
            continue;
        }
        let code = hex(i.saturating_add(2)).unwrap_or(0);
        let paired_low = b.get(i.saturating_add(6)) == Some(&b'\\')
            && b.get(i.saturating_add(7)) == Some(&b'u')
            && hex(i.saturating_add(8)).is_some_and(|lo| (0xDC00..0xE000).contains(&lo));
        if (0xD800..0xDC00).contains(&code) && paired_low {
            i = i.saturating_add(12);
        } else if (0xD800..0xE000).contains(&code) {
            out.push_str(raw.get(run..i).unwrap_or(""));
            out.push_str("\\ufffd");
            i = i.saturating_add(6);
            run = i;
        } else {
            i = i.saturating_add(6);
        }
    }
    out.push_str(raw.get(run..).unwrap_or(""));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &str) -> Result<Cow<'_, str>> {
        Parser::new(s).string()
    }

    #[test]
    fn unescapes() {
        assert!(matches!(
            strings(r#""plain""#).unwrap(),
            Cow::Borrowed("plain")
        ));
        assert_eq!(
            strings(r#""a\"b\\c\/d\n\t\u00e9""#).unwrap(),
            "a\"b\\c/d\n\té"
        );
        assert_eq!(strings(r#""\ud83d\ude00!""#).unwrap(), "😀!");
        assert_eq!(strings(r#""\ud83dx""#).unwrap(), "\u{FFFD}x");
        assert_eq!(strings(r#""\ude00""#).unwrap(), "\u{FFFD}");
        assert_eq!(strings(r#""\ud83d\u0041""#).unwrap(), "\u{FFFD}A");
        assert!(strings("\"a\nb\"").is_err());
        assert!(strings(r#""\x""#).is_err());
        assert!(strings(r#""\u12""#).is_err());
        assert!(strings(r#""open"#).is_err());
    }

    #[test]
    fn lone_surrogates_in_raw_json() {
        assert_eq!(
            replace_lone_surrogates(r#"["\ud800x","\ud83d\ude00","\\ud800","\udc00\u0041"]"#),
            r#"["\ufffdx","\ud83d\ude00","\\ud800","\ufffd\u0041"]"#
        );
        let mut p = Parser::new(r#"{"a":["\ud800"],"b":"\ud83d\ude00"}"#);
        assert_eq!(
            p.value(0).unwrap(),
            Value::Raw(Cow::Owned(r#"{"a":["\ufffd"],"b":"\ud83d\ude00"}"#.into()))
        );
        let mut p = Parser::new(r#"{"b":"\ud83d\ude00"}"#);
        assert!(matches!(p.value(0).unwrap(), Value::Raw(Cow::Borrowed(_))));
    }

    #[test]
    fn query_url_shape() {
        assert_eq!(
            query_url("https://g.example/v1.0/admin/exchange/tracing/messageTraces", 0, 900, 5000),
            "https://g.example/v1.0/admin/exchange/tracing/messageTraces?$filter=receivedDateTime%20ge%201970-01-01T00:00:00Z%20and%20receivedDateTime%20le%201970-01-01T00:15:00Z&$top=5000"
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(upper_first("filteredAsSpam".into()), "FilteredAsSpam");
        assert_eq!(upper_first("newThing".into()), "NewThing");
        assert_eq!(upper_first("Delivered".into()), "Delivered");
        assert_eq!(upper_first("éa".into()), "Éa");
        assert_eq!(upper_first("".into()), "");
    }

    #[test]
    fn error_body() {
        assert_eq!(
            error_message(br#"{"error":{"code":"Forbidden","message":"Service principal-less authentication failed"}}"#)
                .as_deref(),
            Some("Forbidden: Service principal-less authentication failed")
        );
    }

    fn scan(body: &str) -> Result<(Vec<String>, PageEnd)> {
        let ctx = PageCtx {
            request_url: "https://g.example/v1.0/x",
            window_start: 0,
            window_end: 60,
        };
        let mut out = Vec::new();
        let end = scan_page(body.as_bytes(), &ctx, &mut |r| {
            let mut line = Vec::new();
            crate::event::encode(r, 0, &mut line);
            out.push(String::from_utf8(line).unwrap_or_default());
            Ok(())
        })?;
        Ok((out, end))
    }

    #[test]
    fn scans_pages() {
        let (recs, end) = scan(
            r#" {"@odata.nextLink":"https://g.example/next","value":[{"id":"a","size":5,"status":"delivered","x":{"y":[1, 2]}},{}],"extra":[1,{"a":"]"}]} "#,
        )
        .unwrap();
        assert_eq!(end.next_link.as_deref(), Some("https://g.example/next"));
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[0],
            "{\"MessageTraceId\":\"a\",\"Size\":5,\"Status\":\"Delivered\",\"x\":{\"y\":[1,2]},\"StartDate\":\"1970-01-01T00:00:00Z\",\"EndDate\":\"1970-01-01T00:01:00Z\",\"@devo_pulling_id\":0}\n"
        );
        assert_eq!(scan(r#"{"value":[]}"#).unwrap().0.len(), 0);
        assert_eq!(scan(r#"{}"#).unwrap().0.len(), 0);
        for bad in [
            "",
            "{",
            "[]",
            r#"{"value":[{}"#,
            r#"{"value":[{},]}"#,
            r#"{"value":{}}"#,
            r#"{"value":[1]}"#,
            r#"{"value":[]}x"#,
            r#"{"value":[{"a":tru}]}"#,
            r#"{"value":[{"a":01}]}"#,
            r#"{"value":[{"a" 1}]}"#,
            r#"{"error":{"code":"x","message":"y"}}"#,
            r#"{"value":[{"a":[1,]}]}"#,
        ] {
            assert!(
                matches!(scan(bad), Err(e) if matches!(e.root(), Error::Malformed(_))),
                "{bad}"
            );
        }
    }
}
