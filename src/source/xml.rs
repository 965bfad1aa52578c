//! Byte-level XML for the Atom scanner (`reporting.rs`): classifying the markup at a
//! position (`markup`/`Mark`), searching bytes, attributes, entity and character
//! reference decoding, and turning one `<entry>`'s properties into `Record` fields
//! (`scan_entry`). Split out of `reporting.rs`, which owns the feed-level walk.
//! Must not: read the body, allocate per byte, or panic on any input — every access
//! goes through `get()` and checked arithmetic.

use std::borrow::Cow;

use super::{normalize_date, trim, MAX_DEPTH};
use crate::error::{Error, Result};
use crate::record::Value;

pub(super) fn utf8(b: &[u8]) -> Result<&str> {
    std::str::from_utf8(b).map_err(|e| Error::Malformed(format!("body is not UTF-8: {e}")))
}

/// The local part of a qualified name (after the last `:`), as bytes.
pub(super) fn local_bytes(qname: &[u8]) -> &[u8] {
    match qname.iter().rposition(|&c| c == b':') {
        Some(i) => qname.get(i.saturating_add(1)..).unwrap_or(qname),
        None => qname,
    }
}

pub(super) fn local_name(qname: &str) -> &str {
    match qname.bytes().rposition(|c| c == b':') {
        Some(i) => qname.get(i.saturating_add(1)..).unwrap_or(qname),
        None => qname,
    }
}

/// One lexical unit at `pos` in the (partial) body, found at byte level.
#[derive(Debug)]
pub(super) enum Mark {
    /// Not enough bytes to tell; read more.
    More,
    /// Character data up to `.0` (exclusive).
    Text(usize),
    /// A comment, CDATA section or processing instruction ending at `.0`.
    Skip(usize),
    /// A start tag `<name ...>` ending at `end`; `empty` for `<name/>`.
    Start {
        end: usize,
        name_len: usize,
        empty: bool,
    },
    /// An end tag ending at `end`, its name at `name.0..name.1`.
    End { end: usize, name: (usize, usize) },
}

pub(super) fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| from.saturating_add(i))
}

/// Index of the first `b` in `hay`, eight bytes at a time: text runs, end tags and
/// attribute values are most of a page, and a byte loop was a tenth of the pull's CPU.
// Inlined: called per text run and attribute value (Atom scan 23,569 -> 23,166).
// why: `base` counts the 8-byte chunks of `hay`, so `base + i` is at most `hay.len()`.
#[allow(clippy::arithmetic_side_effects)]
#[inline(always)]
pub(super) fn find_byte(hay: &[u8], b: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pat = LO.wrapping_mul(u64::from(b));
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0usize;
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) ^ pat;
        // A byte of `w` is zero where `hay` holds `b`; the lowest flagged byte is exact
        // (borrows only run upwards from a true zero).
        let zero = w.wrapping_sub(LO) & !w & HI;
        if zero != 0 {
            return Some(base + (zero.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == b)
        .map(|i| base + i)
}

pub(super) fn markup(data: &[u8], pos: usize) -> Result<Mark> {
    let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) else {
        return Ok(Mark::More);
    };
    if rest.first() != Some(&b'<') {
        let n = find_byte(rest, b'<').unwrap_or(rest.len());
        return Ok(Mark::Text(pos.saturating_add(n)));
    }
    let delimited = |open: &[u8], close: &[u8]| -> Mark {
        match find(data, pos.saturating_add(open.len()), close) {
            Some(i) => Mark::Skip(i.saturating_add(close.len())),
            None => Mark::More,
        }
    };
    const COMMENT: &[u8] = b"<!--";
    const CDATA: &[u8] = b"<![CDATA[";
    if rest.starts_with(COMMENT) {
        return Ok(delimited(COMMENT, b"-->"));
    }
    if rest.starts_with(CDATA) {
        return Ok(delimited(CDATA, b"]]>"));
    }
    if rest.starts_with(b"<?") {
        return Ok(delimited(b"<?", b"?>"));
    }
    if rest.starts_with(b"<!") {
        if COMMENT.starts_with(rest) || CDATA.starts_with(rest) {
            return Ok(Mark::More);
        }
        return Err(Error::Malformed(
            "a DOCTYPE: not an Atom feed (an HTML page from a proxy?)".into(),
        ));
    }
    if rest.len() < 2 {
        return Ok(Mark::More);
    }
    if rest.starts_with(b"</") {
        let Some(gt) = find_byte(rest, b'>') else {
            return Ok(Mark::More);
        };
        let inner = rest.get(2..gt).unwrap_or_default();
        let name_len = inner
            .iter()
            .position(|c| c.is_ascii_whitespace())
            .unwrap_or(inner.len());
        return Ok(Mark::End {
            end: pos.saturating_add(gt).saturating_add(1),
            name: (
                pos.saturating_add(2),
                pos.saturating_add(2).saturating_add(name_len),
            ),
        });
    }
    // Start tag: find the `>` outside quoted attribute values.
    let after_lt = rest.get(1..).unwrap_or_default();
    let name_len = after_lt
        .iter()
        .position(|&c| c.is_ascii_whitespace() || c == b'/' || c == b'>')
        .unwrap_or(rest.len());
    if name_len == 0 {
        return Err(Error::Malformed("a tag without a name".into()));
    }
    // Jump from delimiter to delimiter: a quoted value is skipped whole.
    let mut i = name_len.saturating_add(1);
    loop {
        let Some(k) = rest.get(i..).and_then(|r| {
            r.iter()
                .position(|&c| matches!(c, b'>' | b'"' | b'\'' | b'<'))
        }) else {
            return Ok(Mark::More);
        };
        i = i.saturating_add(k);
        match rest.get(i) {
            Some(b'>') => {
                let empty = i.checked_sub(1).and_then(|j| rest.get(j)) == Some(&b'/');
                return Ok(Mark::Start {
                    end: pos.saturating_add(i).saturating_add(1),
                    name_len,
                    empty,
                });
            }
            Some(b'<') => return Err(Error::Malformed("'<' inside a tag".into())),
            Some(&q) => {
                let Some(close) = rest
                    .get(i.saturating_add(1)..)
                    .and_then(|r| find_byte(r, q))
                else {
                    return Ok(Mark::More);
                };
                i = i.saturating_add(close).saturating_add(2);
            }
            None => return Ok(Mark::More),
        }
    }
}

/// Text gathered for one property: one raw span (decoded when the field ends) or,
/// when comments/CDATA split it, an owned decoded string.
pub(super) enum Acc<'a> {
    Empty,
    Raw(&'a str),
    Literal(&'a str),
    Owned(String),
}

impl<'a> Acc<'a> {
    fn push(&mut self, piece: &'a str, literal: bool) -> Result<()> {
        let prev = std::mem::replace(self, Acc::Empty);
        *self = match prev {
            Acc::Empty if literal => Acc::Literal(piece),
            Acc::Empty => Acc::Raw(piece),
            other => {
                let mut s = match other {
                    Acc::Raw(r) => decode_xml(r)?.into_owned(),
                    Acc::Literal(l) => l.to_string(),
                    Acc::Owned(o) => o,
                    Acc::Empty => String::new(),
                };
                if literal {
                    s.push_str(piece);
                } else {
                    s.push_str(&decode_xml(piece)?);
                }
                Acc::Owned(s)
            }
        };
        Ok(())
    }

    fn finish(self) -> Result<Cow<'a, str>> {
        Ok(match self {
            Acc::Empty => Cow::Borrowed(""),
            Acc::Raw(r) => decode_xml(r)?,
            Acc::Literal(l) => Cow::Borrowed(l),
            Acc::Owned(o) => Cow::Owned(o),
        })
    }
}

pub(super) struct Field<'a> {
    pub(super) name: &'a str,
    pub(super) null: bool,
    pub(super) edm: &'a str,
    pub(super) text: Acc<'a>,
    pub(super) complex: bool,
}

/// The properties of one complete `<entry>` into `fields`, in document order.
///
/// Walked with the same byte-level splitter as the feed (`markup`), not a second
/// tokenizer: the properties are a flat list of `<d:Name attrs>text</d:Name>`, and a
/// full XML tokenizer spent half of the scan re-checking what the splitter had just
/// checked (`make bench`). Only the properties are walked: the Atom envelope before
/// them (id, category, links, title, author) carries nothing we keep.
pub(super) fn scan_entry<'a>(
    text: &'a str,
    props: Option<usize>,
    fields: &mut Vec<(Cow<'a, str>, Value<'a>)>,
) -> Result<()> {
    let data = text.as_bytes();
    let Some(mut pos) = props else {
        return Ok(());
    };
    let span = |a: usize, b: usize| text.get(a..b).unwrap_or_default();
    // Qualified names of the open elements, `properties` at depth 1.
    let mut stack: [&'a str; MAX_DEPTH] = [""; MAX_DEPTH];
    let mut depth = 0usize;
    let mut field: Option<Field<'a>> = None;
    loop {
        match markup(data, pos)? {
            Mark::More => return Err(Error::Malformed("entry ends inside an element".into())),
            Mark::Text(end) => {
                if depth == 2 {
                    if let Some(f) = field.as_mut() {
                        f.text.push(span(pos, end), false)?;
                    }
                }
                pos = end;
            }
            Mark::Skip(end) => {
                // CDATA is text; comments and processing instructions are not.
                let raw = span(pos, end);
                if depth == 2 {
                    if let (Some(f), Some(cdata)) = (
                        field.as_mut(),
                        raw.strip_prefix("<![CDATA[")
                            .and_then(|r| r.strip_suffix("]]>")),
                    ) {
                        f.text.push(cdata, true)?;
                    }
                }
                pos = end;
            }
            Mark::Start {
                end,
                name_len,
                empty,
            } => {
                let name_at = pos.saturating_add(1);
                let qname = span(name_at, name_at.saturating_add(name_len));
                let slot = stack
                    .get_mut(depth)
                    .ok_or_else(|| Error::Malformed("elements nested too deep".into()))?;
                *slot = qname;
                depth = depth.saturating_add(1);
                let attrs = span(
                    name_at.saturating_add(name_len),
                    end.saturating_sub(if empty { 2 } else { 1 }),
                );
                if depth == 2 {
                    let mut f = Field {
                        name: local_name(qname),
                        null: false,
                        edm: "",
                        text: Acc::Empty,
                        complex: false,
                    };
                    for (name, value) in attributes(attrs) {
                        let (name, value) = (name?, value);
                        match local_name(name) {
                            "null" => f.null = value.trim() == "true",
                            "type" => f.edm = value,
                            _ => {}
                        }
                    }
                    field = Some(f);
                } else {
                    for a in attributes(attrs) {
                        a.0?;
                    }
                    if let Some(f) = field.as_mut() {
                        f.complex = true;
                    }
                }
                pos = end;
                if empty && close(&mut depth, &mut field, fields)? {
                    return Ok(());
                }
            }
            Mark::End { end, name } => {
                let open = depth
                    .checked_sub(1)
                    .and_then(|d| stack.get(d))
                    .copied()
                    .unwrap_or("");
                let closing = span(name.0, name.1);
                if closing != open {
                    return Err(Error::Malformed(format!(
                        "</{}> does not close <{open}>",
                        local_name(closing)
                    )));
                }
                pos = end;
                if close(&mut depth, &mut field, fields)? {
                    return Ok(());
                }
            }
        }
    }
}

/// The element at `depth` ends: a field is finished, `properties` ends the entry's
/// scan (true).
pub(super) fn close<'a>(
    depth: &mut usize,
    field: &mut Option<Field<'a>>,
    fields: &mut Vec<(Cow<'a, str>, Value<'a>)>,
) -> Result<bool> {
    match *depth {
        2 => {
            if let Some(f) = field.take() {
                finish_field(f, fields)?;
            }
        }
        1 => return Ok(true),
        _ => {}
    }
    *depth = depth
        .checked_sub(1)
        .ok_or_else(|| Error::Malformed("unbalanced entry".into()))?;
    Ok(false)
}

/// The attributes of a start tag (the text between its name and `>` or `/>`), as
/// (qualified name, raw value) pairs; a malformed one is an error and ends the list.
pub(super) fn attributes(s: &str) -> impl Iterator<Item = (Result<&str>, &str)> {
    let mut rest = s;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
        if rest.is_empty() {
            return None;
        }
        let bad = |rest: &mut &str| {
            *rest = "";
            Some((
                Err(Error::Malformed(
                    "a malformed attribute in a start tag".into(),
                )),
                "",
            ))
        };
        let Some(eq) = rest.find('=') else {
            return bad(&mut rest);
        };
        let name = rest.get(..eq).unwrap_or_default().trim_end();
        if name.is_empty()
            || name.contains(|c: char| c.is_ascii_whitespace() || c == '"' || c == '\'')
        {
            return bad(&mut rest);
        }
        let after = rest
            .get(eq.saturating_add(1)..)
            .unwrap_or_default()
            .trim_start();
        let Some(q) = after.chars().next().filter(|&c| c == '"' || c == '\'') else {
            return bad(&mut rest);
        };
        let Some(len) = after.get(1..).and_then(|v| v.find(q)) else {
            return bad(&mut rest);
        };
        let value = after.get(1..len.saturating_add(1)).unwrap_or_default();
        if value.contains('<') {
            return bad(&mut rest);
        }
        rest = after.get(len.saturating_add(2)..).unwrap_or_default();
        if rest.starts_with(|c: char| !c.is_ascii_whitespace()) {
            return bad(&mut rest);
        }
        Some((Ok(name), value))
    })
}

pub(super) fn finish_field<'a>(
    f: Field<'a>,
    fields: &mut Vec<(Cow<'a, str>, Value<'a>)>,
) -> Result<()> {
    if f.complex {
        return Ok(());
    }
    let name = Cow::Borrowed(f.name);
    if f.null {
        fields.push((name, Value::Null));
        return Ok(());
    }
    let text = f.text.finish()?;
    let edm = trim(f.edm);
    let edm = edm.strip_prefix("Edm.").unwrap_or(edm);
    let value = match edm {
        "Int16" | "Int32" | "Int64" | "Byte" | "SByte" | "Decimal" | "Double" | "Single" => {
            number_or_text(text)
        }
        "Boolean" => match trim(&text) {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::Text(text),
        },
        "DateTime" | "DateTimeOffset" => Value::Text(normalize_date(text)),
        "" => match f.name {
            "Size" | "Index" => number_or_text(text),
            "Received" | "StartDate" | "EndDate" => Value::Text(normalize_date(text)),
            _ => Value::Text(text),
        },
        _ => Value::Text(text),
    };
    fields.push((name, value));
    Ok(())
}

pub(super) fn number_or_text(text: Cow<'_, str>) -> Value<'_> {
    let t = trim(&text);
    if super::is_json_number(t) {
        match text {
            Cow::Borrowed(b) => Value::Number(Cow::Borrowed(trim(b))),
            Cow::Owned(o) => Value::Number(Cow::Owned(o.trim().to_string())),
        }
    } else {
        Value::Text(text)
    }
}

/// XML text with `&amp; &lt; &gt; &quot; &apos;` and `&#N;`/`&#xH;` decoded;
/// borrowed when there is no `&`. An unknown entity or a reference to an invalid
/// character (a surrogate, NUL, > U+10FFFF) is `Error::Malformed`.
///
/// Inlined for the common case (no `&`), the decoding out of line (`decode_from`).
#[inline(always)]
pub fn decode_xml(s: &str) -> Result<Cow<'_, str>> {
    // `find_byte`, not `str::find`: values are short and a `memchr` call costs more.
    match find_byte(s.as_bytes(), b'&') {
        None => Ok(Cow::Borrowed(s)),
        Some(first) => decode_from(s, first).map(Cow::Owned),
    }
}

/// `s` decoded, its first `&` at `first`.
#[inline(never)]
pub(super) fn decode_from(s: &str, first: usize) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    out.push_str(s.get(..first).unwrap_or(""));
    let mut rest = s.get(first..).unwrap_or("");
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or(""));
        let after = rest.get(amp.saturating_add(1)..).unwrap_or("");
        let semi = after
            .find(';')
            .filter(|&i| i <= 10)
            .ok_or_else(|| Error::Malformed("'&' without an entity reference".into()))?;
        let name = after.get(..semi).unwrap_or("");
        let c = match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = name.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = name.strip_prefix('#') {
                    dec.parse::<u32>().ok()
                } else {
                    None
                };
                code.filter(|&c| c != 0)
                    .and_then(char::from_u32)
                    .ok_or_else(|| Error::Malformed(format!("bad entity reference &{name};")))?
            }
        };
        out.push(c);
        rest = after.get(semi.saturating_add(1)..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}
