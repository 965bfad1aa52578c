//! Graph `getDetailsByRecipient`: the request URL and the scan of its answer
//! `{"value":[{id, messageId, dateTime, event, action, description, data}]}` into detail
//! events (SPEC §4 "Detail events").
//!
//! Owns: the OData function URL (address with `'` doubled, percent-encoded), the mapping
//! of a detail row to the MessageTraceDetail names and its identity. Must not: hold more
//! than one element of the body (it reuses the streaming Graph scanner), do IO besides
//! reading the body, or yield an event before its element is complete.

use std::borrow::Cow;
use std::io::Read;

use super::PageCtx;
use crate::error::Result;
use crate::record::{Record, Value};

/// `{graph_url}/{id}/getDetailsByRecipient(recipientAddress='{address}')`: `graph_url`
/// is the messageTraces endpoint; `'` is doubled (OData), then the id and the function
/// argument are percent-encoded (everything but unreserved characters).
pub fn details_url(graph_url: &str, trace_id: &str, recipient: &str) -> String {
    let quoted = recipient.replace('\'', "''");
    format!(
        "{}/{}/getDetailsByRecipient(recipientAddress=%27{}%27)",
        graph_url.trim_end_matches('/'),
        percent(trace_id),
        percent(&quoted)
    )
}

/// Percent-encode every byte outside RFC 3986's unreserved set.
fn percent(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The identity of a detail event: (trace id, recipient, date, event, description),
/// FNV-1a over the parts (the recipient lower-cased).
pub fn identity(rec: &Record<'_>) -> u64 {
    let mut h = crate::record::record_key(
        rec.text("MessageTraceId").unwrap_or(""),
        rec.text("RecipientAddress").unwrap_or(""),
    );
    for part in ["Date", "Event", "Detail"] {
        for b in rec
            .text(part)
            .unwrap_or("")
            .bytes()
            .chain(std::iter::once(0u8))
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Scan one detail answer, calling `on_event` with each detail row as a detail event
/// (`MessageTraceId`, `RecipientAddress` = `recipient`, `MessageId`, `Date` RFC 3339 UTC,
/// `Event`, `Action`, `Detail`, `Data`; members Graph adds later keep their own names).
/// Returns the number of rows. A cut or malformed body is `Error::Malformed`.
pub fn scan_details<R: Read>(
    body: R,
    ctx: &PageCtx<'_>,
    trace_id: &str,
    recipient: &str,
    on_event: &mut dyn FnMut(&Record<'_>) -> Result<()>,
) -> Result<u64> {
    let mut ev = Record::new();
    let end = super::graph::scan_page(body, ctx, &mut |row: &Record<'_>| {
        ev.fields.clear();
        ev.push(
            "MessageTraceId",
            Value::Text(Cow::Owned(
                row.text("MessageTraceId").unwrap_or(trace_id).to_string(),
            )),
        );
        ev.push(
            "RecipientAddress",
            Value::Text(Cow::Owned(recipient.to_string())),
        );
        for (name, value) in &row.fields {
            let to = match name.as_ref() {
                "MessageTraceId" | "StartDate" | "EndDate" | "RecipientAddress" => continue,
                "MessageId" => "MessageId",
                "dateTime" => {
                    let v = match value {
                        Value::Text(t) => {
                            Value::Text(Cow::Owned(super::normalize_date(t.clone()).into_owned()))
                        }
                        other => other.clone(),
                    };
                    ev.push("Date", owned(v));
                    continue;
                }
                "event" => "Event",
                "action" => "Action",
                "description" => "Detail",
                "data" => "Data",
                other => {
                    ev.push(other.to_string(), owned(value.clone()));
                    continue;
                }
            };
            ev.push(to, owned(value.clone()));
        }
        on_event(&ev)
    })?;
    Ok(end.records)
}

fn owned(v: Value<'_>) -> Value<'static> {
    match v {
        Value::Null => Value::Null,
        Value::Bool(b) => Value::Bool(b),
        Value::Text(t) => Value::Text(Cow::Owned(t.into_owned())),
        Value::Number(t) => Value::Number(Cow::Owned(t.into_owned())),
        Value::Raw(t) => Value::Raw(Cow::Owned(t.into_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_doubles_quotes_and_encodes() {
        assert_eq!(
            details_url("https://g/v1.0/admin/exchange/tracing/messageTraces/", "a b", "o'brien@exämple.com"),
            "https://g/v1.0/admin/exchange/tracing/messageTraces/a%20b/getDetailsByRecipient(recipientAddress=%27o%27%27brien%40ex%C3%A4mple.com%27)"
        );
    }

    #[test]
    fn rows_become_detail_events() {
        let body = r#"{"@odata.context":"x","value":[
            {"id":"t1","messageId":"<m@x>","dateTime":"2026-11-24T10:00:00.123Z","event":"Receive","action":null,"description":"Message received by: \u00e9x","data":"<root><MEP Name=\"a\" String=\"b\"/></root>"},
            {"id":"t1","messageId":"<m@x>","dateTime":"2026-11-24T10:00:01Z","event":"Fail","action":"Reject","description":"550","data":"<root/>","later":[1]}]}"#;
        let ctx = PageCtx {
            request_url: "https://g/x",
            window_start: 0,
            window_end: 0,
        };
        let mut out = Vec::new();
        let mut ids = Vec::new();
        let n = scan_details(body.as_bytes(), &ctx, "t1", "O'B@x", &mut |r| {
            ids.push(identity(r));
            crate::event::encode(r, 7, &mut out);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
        let text = String::from_utf8(out).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            r#"{"MessageTraceId":"t1","RecipientAddress":"O'B@x","MessageId":"<m@x>","Date":"2026-11-24T10:00:00.123Z","Event":"Receive","Action":null,"Detail":"Message received by: éx","Data":"<root><MEP Name=\"a\" String=\"b\"/></root>","@devo_pulling_id":7}"#
        );
        assert!(text.lines().nth(1).unwrap().contains(r#""later":[1]"#));
        assert_ne!(ids[0], ids[1]);
        let cut = &body[..body.len() - 30];
        assert!(scan_details(cut.as_bytes(), &ctx, "t1", "x", &mut |_| Ok(())).is_err());
    }
}
