//! The one record type both Microsoft APIs yield, and its identity.
//!
//! Owns: `Record` (ordered fields under their Reporting Web Service names, text
//! borrowed from the scanned input where no decoding was needed), the record key
//! (a 64-bit fingerprint of (MessageTraceId, RecipientAddress)) and the received
//! instant used for window-edge dedup. Must not: do IO or know either wire format.

use std::borrow::Cow;

/// A field's value as it goes into the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// JSON `null` (`m:null="true"`, or JSON null).
    Null,
    /// Text, exactly as Microsoft sent it after entity/escape decoding.
    Text(Cow<'a, str>),
    /// A number already validated as a JSON number literal (`Size`, `Index`).
    Number(Cow<'a, str>),
    /// A JSON boolean.
    Bool(bool),
    /// A JSON object or array kept verbatim (validated JSON text from Graph, for
    /// fields Graph may add later); the encoder copies it without its whitespace.
    Raw(Cow<'a, str>),
}

/// One message trace record: fields in API order, under their event names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record<'a> {
    pub fields: Vec<(Cow<'a, str>, Value<'a>)>,
}

impl<'a> Record<'a> {
    pub fn new() -> Self {
        Record { fields: Vec::new() }
    }

    pub fn push(&mut self, name: impl Into<Cow<'a, str>>, value: Value<'a>) {
        self.fields.push((name.into(), value));
    }

    /// The value of a field by its event name.
    pub fn get(&self, name: &str) -> Option<&Value<'a>> {
        self.fields
            .iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v)
    }

    /// The text of a field, if it is text.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// Identity: fingerprint of (MessageTraceId, RecipientAddress). The recipient is
    /// compared case-insensitively (Microsoft is inconsistent about address case).
    pub fn key(&self) -> u64 {
        record_key(
            self.text("MessageTraceId").unwrap_or(""),
            self.text("RecipientAddress").unwrap_or(""),
        )
    }

    /// `Received` as epoch seconds (UTC), if present and well formed.
    pub fn received(&self) -> Option<i64> {
        crate::time::parse_iso(self.text("Received")?).map(|i| i.secs)
    }
}

/// FNV-1a 64 over `trace_id`, a separator and the lower-cased recipient. 64 bits keep
/// the dedup sets small (8 bytes a record); a collision would need ~2^32 records in
/// one window, far beyond any tenant's volume.
pub fn record_key(trace_id: &str, recipient: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in trace_id
        .bytes()
        .map(|b| b.to_ascii_lowercase())
        .chain(std::iter::once(0u8))
        .chain(recipient.bytes().map(|b| b.to_ascii_lowercase()))
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_separates_recipients_and_ignores_case() {
        assert_ne!(record_key("a", "x@y"), record_key("a", "z@y"));
        assert_ne!(record_key("ab", "c"), record_key("a", "bc"));
        assert_eq!(record_key("A-1", "X@Y.com"), record_key("a-1", "x@y.COM"));
    }

    #[test]
    fn received_parses() {
        let mut r = Record::new();
        r.push(
            "Received",
            Value::Text("2026-11-24T10:00:00.1234567Z".into()),
        );
        assert_eq!(
            r.received(),
            crate::time::parse_iso("2026-11-24T10:00:00").map(|i| i.secs)
        );
    }
}
