//! Event encoding: a `Record` → one JSON line (SPEC §4).
//!
//! Owns: JSON string escaping and the event layout `{fields in record order,
//! "@devo_pulling_id":N}\n`. Text is escaped (`"` `\` and control characters;
//! U+2028/U+2029 as `\u2028`/`\u2029` for JavaScript consumers); other non-ASCII is
//! written as UTF-8 as is. Numbers are written verbatim (validated by the
//! scanners), `Raw` JSON verbatim minus its insignificant whitespace, so the line
//! never holds a raw newline. Must not: allocate per field — everything is
//! appended to the caller's reused `out`.

use crate::record::{Record, Value};

/// Append `{...fields..., "@devo_pulling_id": <id>}\n` to `out`. No raw newline inside.
pub fn encode(record: &Record<'_>, pulling_id: i64, out: &mut Vec<u8>) {
    out.push(b'{');
    for (name, value) in &record.fields {
        write_str(name, out);
        out.push(b':');
        match value {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Text(t) => write_str(t, out),
            Value::Number(n) => out.extend_from_slice(n.as_bytes()),
            Value::Raw(r) => write_raw(r, out),
        }
        out.push(b',');
    }
    out.extend_from_slice(b"\"@devo_pulling_id\":");
    write_int(pulling_id, out);
    out.extend_from_slice(b"}\n");
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Bytes that need a look in a JSON string: `"`, `\\`, control characters, and
/// 0xE2 (the lead byte of U+2028/U+2029). Everything else is copied in runs.
// why: evaluated at compile time, where an out-of-range index fails the build.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0xE2] = true;
    t
};

/// `s` as a JSON string literal. Inlined into `encode` (29 calls a record, mostly
/// short strings: at `opt-level = "s"` the call cost a tenth of the encoder;
/// tests/bench/PROFILE.md).
// why: `i` and `run` only grow up to `b.len()` (each step is 1 or a matched 3-byte sequence).
#[allow(clippy::arithmetic_side_effects)]
#[inline(always)]
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut run = 0; // start of the pending run of bytes copied as they are
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if SPECIAL.get(usize::from(c)) != Some(&true) {
            i += 1;
            continue;
        }
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => b"",
        };
        let (code, len) = match c {
            // U+2028 / U+2029: E2 80 A8 / E2 80 A9.
            0xE2 => match (b.get(i + 1), b.get(i + 2)) {
                (Some(0x80), Some(0xA8)) => (0x2028u16, 3),
                (Some(0x80), Some(0xA9)) => (0x2029, 3),
                _ => {
                    i += 1;
                    continue;
                }
            },
            _ => (u16::from(c), 1),
        };
        out.extend_from_slice(b.get(run..i).unwrap_or_default());
        if short.is_empty() {
            out.extend_from_slice(b"\\u");
            for shift in [12u16, 8, 4, 0] {
                out.push(
                    HEX.get(usize::from((code >> shift) & 0xF))
                        .copied()
                        .unwrap_or(b'0'),
                );
            }
        } else {
            out.extend_from_slice(short);
        }
        i += len;
        run = i;
    }
    out.extend_from_slice(b.get(run..).unwrap_or_default());
    out.push(b'"');
}

/// Valid JSON text without the whitespace between tokens.
fn write_raw(s: &str, out: &mut Vec<u8>) {
    let (mut in_str, mut esc) = (false, false);
    for &c in s.as_bytes() {
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
            out.push(c);
        } else if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            if c == b'"' {
                in_str = true;
            }
            out.push(c);
        }
    }
}

fn write_int(n: i64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut v = n.unsigned_abs();
    let mut i = digits.len();
    // Filled from the right; 20 digits hold any u64, so the loop ends on `v == 0`.
    for d in digits.iter_mut().rev() {
        *d = b'0' | (v % 10) as u8; // b'0' is 0x30: OR adds a digit 0..=9
        i = i.saturating_sub(1);
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn exact_bytes() {
        let mut r = Record::new();
        r.push("Organization", Value::Text("contoso.com".into()));
        r.push("MessageId", Value::Null);
        r.push(
            "Subject",
            Value::Text("a\"b\\c\nd\re\tf\u{1}g\u{7f}é😀\u{2028}\u{2029}/".into()),
        );
        r.push("Size", Value::Number("1234".into()));
        r.push("Flag", Value::Bool(true));
        r.push("Off", Value::Bool(false));
        r.push(
            "Extra",
            Value::Raw(Cow::Borrowed("{ \"a\" : [1, \"x y\\\" \"],\n\"b\":null }")),
        );
        let mut out = b"prefix ".to_vec();
        encode(&r, 1_764_000_000_123, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "prefix {\"Organization\":\"contoso.com\",\"MessageId\":null,\
             \"Subject\":\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\u{7f}é😀\\u2028\\u2029/\",\
             \"Size\":1234,\"Flag\":true,\"Off\":false,\"Extra\":{\"a\":[1,\"x y\\\" \"],\"b\":null},\
             \"@devo_pulling_id\":1764000000123}\n"
        );
    }

    #[test]
    fn empty_record_and_ids() {
        let mut out = Vec::new();
        encode(&Record::new(), 0, &mut out);
        encode(&Record::new(), -42, &mut out);
        encode(&Record::new(), i64::MIN, &mut out);
        assert_eq!(
            out,
            b"{\"@devo_pulling_id\":0}\n{\"@devo_pulling_id\":-42}\n{\"@devo_pulling_id\":-9223372036854775808}\n"
        );
    }

    #[test]
    fn output_is_json_without_raw_newline() {
        let mut r = Record::new();
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        r.push("weird \"name\"\n", Value::Text(all.clone().into()));
        let mut out = Vec::new();
        encode(&r, 7, &mut out);
        assert_eq!(out.iter().filter(|&&c| c == b'\n').count(), 1);
        let text = std::str::from_utf8(&out).unwrap();
        let v: miniserde::json::Value = miniserde::json::from_str(text.trim_end()).unwrap();
        let miniserde::json::Value::Object(o) = v else {
            panic!()
        };
        assert!(
            matches!(o.get("weird \"name\"\n"), Some(miniserde::json::Value::String(s)) if *s == all)
        );
    }

    #[test]
    fn reuses_out_without_growth() {
        let mut r = Record::new();
        r.push("Subject", Value::Text("hello".into()));
        let mut out = Vec::with_capacity(256);
        encode(&r, 1, &mut out);
        let cap = out.capacity();
        out.clear();
        encode(&r, 1, &mut out);
        assert_eq!(out.capacity(), cap);
    }
}
