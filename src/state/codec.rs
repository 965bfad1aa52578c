//! The state file format and its pure codec: encode a cursor into a framed record,
//! read a log back (the last valid record wins), validate decoded values. Must not do
//! IO (`mod.rs` owns the file) or panic on any input.
//!
//! # File format (version 2; version 1 still loads)
//!
//! A state file `<dir>/<input_id>_<service>.state` is a sequence of records and
//! nothing else (no file header). Each record is one checkpoint; the last valid
//! record wins. A record is a 10-byte header followed by the payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | magic `0xC7` ([`MAGIC`]) — not ASCII, so a text file never looks like state |
//! | 1 | 1 | payload format version, `2` ([`FORMAT_VERSION`]; `1` is read too) |
//! | 2 | 4 | payload length `n`, u32 little-endian, at most [`MAX_RECORD_LEN`] |
//! | 6 | 4 | CRC-32 (IEEE 802.3, reflected, poly `0xEDB88320`, init/xorout `0xFFFFFFFF` — zlib's `crc32`) over header bytes 0..6 then the `n` payload bytes, u32 little-endian |
//! | 10 | n | payload |
//!
//! The payload of version 2 is, in this order, with `varint` = unsigned LEB128
//! (at most 10 bytes, no overflow) and `zigzag` = the signed-to-unsigned map of
//! protobuf (`0, -1, 1, -2, …`):
//!
//! 1. `window_start` — zigzag varint (epoch seconds UTC)
//! 2. `window_end` — zigzag varint (0 between windows)
//! 3. `requests`, 4. `sent`, 5. `filtered`, 6. `delay_secs` — varint each
//! 7. `service` — one tag byte: `1` = `office365_exchange_message_service`,
//!    `2` = `office365_exchange_message_graph_service`, `0` = a literal follows:
//!    varint length (≤ [`MAX_TEXT_LEN`]) then UTF-8 bytes
//! 8. `reset_auth` — varint `0` for none, else `len + 1` then `len` UTF-8 bytes
//!    (≤ [`MAX_TEXT_LEN`])
//! 9. `next_link` — varint `0` for none, else `len + 1` then `len` UTF-8 bytes
//!    (≤ [`MAX_LINK_LEN`])
//! 10. `settle_start` — zigzag varint: the settle pass's next window (or the one
//!     being read when `settle_end` ≠ 0)
//! 11. `settle_end` — zigzag varint (0 between settle windows)
//! 12. `settle_link` — as `next_link`, the settle pass's next page
//! 13. `window_len` — varint: the window length sized by record count (0 = the
//!     API's rule alone)
//! 14. `late_events`, 15. `status_changes` — varint each
//!
//! Fields 1–9 describe the first pass (its window and next link). No bytes may
//! follow the last field. A typical checkpoint between windows is about 35 bytes
//! (plus the link, when paged part-way). Edge keys are gone: the delivery ledger
//! (`ledger.rs`) decides every repeat.
//!
//! Version 1 is fields 1–9 followed by `edge_keys` — varint count
//! (≤ [`MAX_EDGE_KEYS`]) then each key as u64 little-endian. A version 1 record is
//! migrated on decode: both passes start at its cursor (its window and next link
//! are the first pass's; the settle pass rides along, as a v1 window was read with
//! the full delay), the counters of v2 start at 0, and its edge keys are kept in
//! [`Cursor::edge_keys`] for the puller to seed into the ledger (as "any status"
//! entries) before its first checkpoint, which writes v2.
//!
//! # Ranges
//!
//! The codec above reads any value its fields can hold ([`decode_log`]); a record
//! read back from a file must also be *plausible* ([`validate`], applied by
//! [`recover`], which `StateFile::open` and `peek` use): window instants within
//! [`MIN_TIME`]..[`MAX_TIME`], `window_end` either 0 or after `window_start` by at
//! most [`MAX_WINDOW_SPAN`], a next link only while a window is in progress (the
//! same for the settle pass's `settle_start`/`settle_end`/`settle_link`), a
//! `window_len` of at most [`MAX_WINDOW_SPAN`], counters at most [`MAX_COUNTER`],
//! delay at most [`MAX_DELAY_SECS`]. A CRC-valid
//! record outside them (a forged or bit-rotted-then-re-CRCed file) is corrupt,
//! handled exactly as a bad CRC: a `window_start` of `i64::MIN` would otherwise
//! overflow the window arithmetic or make the tenant query the year −292 billion.
//!
//! # Recovery
//!
//! Records are read from offset 0. The first one that is cut short, has a bad
//! magic, an oversized length, a CRC mismatch or a payload that does not decode
//! ends the log: it and everything after it is the *torn tail*, reported with its
//! byte offset, and `StateFile::open` truncates it (logging a warning). Appends
//! are fsynced one by one, so only the last record can be torn by a crash; a
//! damaged record earlier in the file (disk corruption) costs the later
//! checkpoints and so at most repeats events, never skips them. A record whose
//! CRC is right but whose version is unknown was written by a newer msgtrace:
//! `open` refuses it rather than truncate it (downgrades must not lose state).
//! A file whose FIRST record is invalid (other than cut short, which a crash
//! during the very first append leaves) is not ours, or not any more: `open`
//! refuses it and leaves it as it is, naming the file and the fix.
//!
//! # Version history
//!
//! - 1: first format. `tests/fixtures/state/001_v1.state` must keep loading.
//! - 2: two passes (settle cursor), window length, late/status counters; edge keys
//!   moved to the delivery ledger. `tests/fixtures/state/002_v2.state`.

use super::*;

// ---------------------------------------------------------------- CRC-32

/// CRC-32/IEEE lookup table, built at compile time.
const CRC_TABLE: [u32; 256] = crc_table();

// Evaluated at compile time only, over the fixed range 0..256: it cannot overflow or
// index out of bounds (a mistake would fail the build, not a run).
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// Continue a CRC-32 over `bytes` (start with `0`; the pre/post inversion is inside).
pub fn crc32_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        // Index is masked to 0..=255: cannot go out of bounds.
        let idx = ((c ^ u32::from(b)) & 0xFF) as usize;
        c = CRC_TABLE.get(idx).copied().unwrap_or(0) ^ (c >> 8);
    }
    !c
}

/// CRC-32/IEEE of `bytes` (zlib's `crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32_update(0, bytes)
}

// ---------------------------------------------------------------- codec

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ ((v & 1) as i64).wrapping_neg()
}

fn put_opt_text(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put_varint(out, 0),
        Some(s) => {
            put_varint(out, (s.len() as u64).saturating_add(1));
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// The payload (format `version`, 1 or 2) of a cursor.
fn encode_payload(c: &Cursor, version: u8, out: &mut Vec<u8>) {
    put_varint(out, zigzag(c.window_start));
    put_varint(out, zigzag(c.window_end));
    put_varint(out, c.requests);
    put_varint(out, c.sent);
    put_varint(out, c.filtered);
    put_varint(out, c.delay_secs);
    match c.service.as_str() {
        SERVICE_RWS => out.push(1),
        SERVICE_GRAPH => out.push(2),
        other => {
            out.push(0);
            put_varint(out, other.len() as u64);
            out.extend_from_slice(other.as_bytes());
        }
    }
    put_opt_text(out, c.reset_auth.as_deref());
    put_opt_text(out, c.next_link.as_deref());
    if version == FORMAT_V1 {
        put_varint(out, c.edge_keys.len() as u64);
        for k in &c.edge_keys {
            out.extend_from_slice(&k.to_le_bytes());
        }
        return;
    }
    put_varint(out, zigzag(c.settle_start));
    put_varint(out, zigzag(c.settle_end));
    put_opt_text(out, c.settle_link.as_deref());
    put_varint(out, c.window_len);
    put_varint(out, c.late_events);
    put_varint(out, c.status_changes);
}

/// Why a cursor cannot be written: a field past its bound (`None` when it fits).
/// `StateFile::checkpoint` refuses such a cursor, so every record on disk decodes.
pub fn check_bounds(c: &Cursor) -> Option<String> {
    if [&c.next_link, &c.settle_link]
        .iter()
        .any(|l| l.as_ref().is_some_and(|l| l.len() > MAX_LINK_LEN))
    {
        return Some(format!("next link longer than {MAX_LINK_LEN} bytes"));
    }
    if c.service.len() > MAX_TEXT_LEN {
        return Some(format!("service name longer than {MAX_TEXT_LEN} bytes"));
    }
    if c.reset_auth
        .as_ref()
        .is_some_and(|s| s.len() > MAX_TEXT_LEN)
    {
        return Some(format!(
            "reset_persistence_auth longer than {MAX_TEXT_LEN} bytes"
        ));
    }
    None
}

/// One framed record (header + payload, format [`FORMAT_VERSION`]) for `cursor`,
/// ready to append. A cursor past the bounds (see [`check_bounds`]) encodes but will
/// not decode.
pub fn encode_record(cursor: &Cursor) -> Vec<u8> {
    encode_record_version(cursor, FORMAT_VERSION)
}

/// A record in format 1 (what msgtrace 0.1.0 wrote): for migration tests and fixtures.
pub fn encode_record_v1(cursor: &Cursor) -> Vec<u8> {
    encode_record_version(cursor, FORMAT_V1)
}

fn encode_record_version(cursor: &Cursor, version: u8) -> Vec<u8> {
    let keys = if version == FORMAT_V1 {
        cursor.edge_keys.len().saturating_mul(8)
    } else {
        0
    };
    let mut out = Vec::with_capacity(keys.saturating_add(64));
    out.extend_from_slice(&[MAGIC, version, 0, 0, 0, 0, 0, 0, 0, 0]);
    encode_payload(cursor, version, &mut out);
    let len = out.len().saturating_sub(HEADER_LEN) as u32;
    if let Some(b) = out.get_mut(2..6) {
        b.copy_from_slice(&len.to_le_bytes());
    }
    let crc = crc32_update(
        crc32(out.get(..6).unwrap_or_default()),
        out.get(HEADER_LEN..).unwrap_or_default(),
    );
    if let Some(b) = out.get_mut(6..10) {
        b.copy_from_slice(&crc.to_le_bytes());
    }
    out
}

/// Why the log ends where it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TornReason {
    /// Fewer than [`HEADER_LEN`] bytes left.
    ShortHeader,
    /// First byte is not [`MAGIC`].
    BadMagic(u8),
    /// Declared payload length above [`MAX_RECORD_LEN`].
    TooLong(u32),
    /// The payload is cut short by the end of the file.
    ShortPayload { want: usize, have: usize },
    /// The CRC does not match the bytes.
    BadCrc,
    /// CRC is right but the version is unknown: written by a newer msgtrace.
    NewerVersion(u8),
    /// CRC is right but the payload does not decode (a bug, or a forged file).
    BadPayload(&'static str),
    /// CRC is right and the payload decodes, but a value is out of range ([`validate`]).
    OutOfRange(&'static str),
}

impl std::fmt::Display for TornReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TornReason::ShortHeader => f.write_str("record header cut short"),
            TornReason::BadMagic(b) => write!(f, "bad magic byte 0x{b:02x}"),
            TornReason::TooLong(n) => {
                write!(f, "record length {n} above the {MAX_RECORD_LEN} limit")
            }
            TornReason::ShortPayload { want, have } => {
                write!(f, "record cut short ({have} of {want} payload bytes)")
            }
            TornReason::BadCrc => f.write_str("crc mismatch"),
            TornReason::NewerVersion(v) => write!(
                f,
                "format version {v} is newer than this msgtrace understands ({FORMAT_VERSION})"
            ),
            TornReason::BadPayload(what) => write!(f, "payload does not decode: {what}"),
            TornReason::OutOfRange(what) => write!(f, "value out of range: {what}"),
        }
    }
}

/// Where and why the valid log ends before the end of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Byte offset of the first invalid record (== `Recovery::valid_len`).
    pub offset: usize,
    pub reason: TornReason,
}

/// The result of reading a state log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The last valid record's cursor, if any record is valid.
    pub cursor: Option<Cursor>,
    /// Bytes from the start that hold valid records only.
    pub valid_len: usize,
    /// Set when bytes follow `valid_len`.
    pub torn: Option<TornTail>,
    /// Valid records read.
    pub records: usize,
    /// Length (header included) of the last valid record.
    pub last_record_len: usize,
}

/// Reads a payload field by field; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let head = self.buf.get(..n)?;
        self.buf = self.buf.get(n..)?;
        Some(head)
    }

    pub(crate) fn byte(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    pub(crate) fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10u32 {
            let b = self.byte()?;
            let part = u64::from(b & 0x7F);
            // The 10th byte may only carry the top bit of a u64.
            if i == 9 && part > 1 {
                return None;
            }
            v |= part << (7u32.saturating_mul(i));
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn text(&mut self, len: u64, max: usize) -> Option<String> {
        let len = usize::try_from(len).ok().filter(|&l| l <= max)?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }

    fn opt_text(&mut self, max: usize) -> Option<Option<String>> {
        match self.varint()? {
            0 => Some(None),
            n => Some(Some(self.text(n.saturating_sub(1), max)?)),
        }
    }
}

fn decode_payload(payload: &[u8], version: u8) -> Result<Cursor, &'static str> {
    let mut r = Reader { buf: payload };
    let window_start = unzigzag(r.varint().ok_or("window start")?);
    let window_end = unzigzag(r.varint().ok_or("window end")?);
    let requests = r.varint().ok_or("requests")?;
    let sent = r.varint().ok_or("sent")?;
    let filtered = r.varint().ok_or("filtered")?;
    let delay_secs = r.varint().ok_or("delay")?;
    let service = match r.byte().ok_or("service")? {
        1 => SERVICE_RWS.to_owned(),
        2 => SERVICE_GRAPH.to_owned(),
        0 => {
            let len = r.varint().ok_or("service length")?;
            r.text(len, MAX_TEXT_LEN).ok_or("service name")?
        }
        _ => return Err("unknown service tag"),
    };
    let reset_auth = r.opt_text(MAX_TEXT_LEN).ok_or("reset_persistence_auth")?;
    let next_link = r.opt_text(MAX_LINK_LEN).ok_or("next link")?;
    let mut c = Cursor {
        window_start,
        window_end,
        next_link,
        edge_keys: Vec::new(),
        requests,
        sent,
        filtered,
        reset_auth,
        delay_secs,
        service,
        // Version 1 migration: the settle pass starts where the (single) pass was.
        settle_start: window_start,
        settle_end: 0,
        settle_link: None,
        window_len: 0,
        late_events: 0,
        status_changes: 0,
    };
    if version != FORMAT_V1 {
        c.settle_start = unzigzag(r.varint().ok_or("settle start")?);
        c.settle_end = unzigzag(r.varint().ok_or("settle end")?);
        c.settle_link = r.opt_text(MAX_LINK_LEN).ok_or("settle link")?;
        c.window_len = r.varint().ok_or("window length")?;
        c.late_events = r.varint().ok_or("late events")?;
        c.status_changes = r.varint().ok_or("status changes")?;
        if !r.buf.is_empty() {
            return Err("trailing bytes");
        }
        return Ok(c);
    }
    let count = r.varint().ok_or("edge key count")?;
    let count = usize::try_from(count)
        .ok()
        .filter(|&n| n <= MAX_EDGE_KEYS)
        .ok_or("too many edge keys")?;
    let bytes = r
        .take(count.checked_mul(8).ok_or("edge keys")?)
        .ok_or("edge keys cut short")?;
    c.edge_keys = bytes
        .chunks_exact(8)
        .map(|k| {
            let mut a = [0u8; 8];
            a.copy_from_slice(k);
            u64::from_le_bytes(a)
        })
        .collect();
    if !r.buf.is_empty() {
        return Err("trailing bytes");
    }
    Ok(c)
}

/// Read one record at the start of `bytes`: its cursor and length, or why not.
fn decode_one(bytes: &[u8]) -> Result<(Cursor, usize), TornReason> {
    let header = bytes.get(..HEADER_LEN).ok_or(TornReason::ShortHeader)?;
    let word = |at: usize| -> u32 {
        let mut a = [0u8; 4];
        if let Some(s) = header.get(at..at.saturating_add(4)) {
            a.copy_from_slice(s);
        }
        u32::from_le_bytes(a)
    };
    let magic = header.first().copied().unwrap_or(0);
    if magic != MAGIC {
        return Err(TornReason::BadMagic(magic));
    }
    let len32 = word(2);
    let len = usize::try_from(len32)
        .ok()
        .filter(|&l| l <= MAX_RECORD_LEN)
        .ok_or(TornReason::TooLong(len32))?;
    let have = bytes.len().saturating_sub(HEADER_LEN);
    let payload = bytes
        .get(HEADER_LEN..HEADER_LEN.saturating_add(len))
        .ok_or(TornReason::ShortPayload { want: len, have })?;
    let crc = crc32_update(crc32(header.get(..6).unwrap_or_default()), payload);
    if crc != word(6) {
        return Err(TornReason::BadCrc);
    }
    let version = header.get(1).copied().unwrap_or(0);
    if version != FORMAT_VERSION && version != FORMAT_V1 {
        return Err(TornReason::NewerVersion(version));
    }
    let cursor = decode_payload(payload, version).map_err(TornReason::BadPayload)?;
    Ok((cursor, HEADER_LEN.saturating_add(len)))
}

/// Why a decoded cursor cannot be a real checkpoint (see the module's "Ranges"), or
/// `Ok` when every value is plausible.
pub fn validate(c: &Cursor) -> Result<(), &'static str> {
    if !(MIN_TIME..=MAX_TIME).contains(&c.window_start) {
        return Err("window start outside 1970-01-01 .. 2200-01-01");
    }
    if c.window_end != 0 {
        if !(MIN_TIME..=MAX_TIME).contains(&c.window_end) {
            return Err("window end outside 1970-01-01 .. 2200-01-01");
        }
        if c.window_end <= c.window_start {
            return Err("window end not after window start");
        }
        if c.window_end.saturating_sub(c.window_start) > MAX_WINDOW_SPAN {
            return Err("window longer than 31 days");
        }
    }
    match &c.next_link {
        Some(_) if c.window_end == 0 => return Err("next link outside a window"),
        Some(l) if l.is_empty() => return Err("empty next link"),
        Some(l) if l.chars().any(char::is_control) => {
            return Err("control character in the next link")
        }
        _ => {}
    }
    // The settle pass's window, by the same rules (format 2).
    if !(MIN_TIME..=MAX_TIME).contains(&c.settle_start) {
        return Err("settle pass start outside 1970-01-01 .. 2200-01-01");
    }
    if c.settle_end != 0 {
        if !(MIN_TIME..=MAX_TIME).contains(&c.settle_end) {
            return Err("settle pass end outside 1970-01-01 .. 2200-01-01");
        }
        if c.settle_end <= c.settle_start {
            return Err("settle pass end not after its start");
        }
        if c.settle_end.saturating_sub(c.settle_start) > MAX_WINDOW_SPAN {
            return Err("settle pass window longer than 31 days");
        }
    }
    match &c.settle_link {
        Some(_) if c.settle_end == 0 => return Err("settle pass next link outside a window"),
        Some(l) if l.is_empty() => return Err("empty settle pass next link"),
        Some(l) if l.chars().any(char::is_control) => {
            return Err("control character in the settle pass next link")
        }
        _ => {}
    }
    if u64::try_from(MAX_WINDOW_SPAN).is_ok_and(|max| c.window_len > max) {
        return Err("window length longer than 31 days");
    }
    if [
        c.requests,
        c.sent,
        c.filtered,
        c.late_events,
        c.status_changes,
    ]
    .iter()
    .any(|&n| n > MAX_COUNTER)
    {
        return Err("counter above 2^53");
    }
    if c.delay_secs > MAX_DELAY_SECS {
        return Err("delay above 30 days");
    }
    Ok(())
}

/// Read a whole state log: the last valid record wins; the first invalid one
/// ends the log and is reported as the torn tail. Never panics. This is the codec
/// alone: values are not range-checked (see [`recover`]).
pub fn decode_log(bytes: &[u8]) -> Recovery {
    read_log(bytes, false)
}

/// [`decode_log`] plus [`validate`] on every record: a record out of range ends the
/// log like a bad CRC. What `StateFile::open` and `peek` use.
pub fn recover(bytes: &[u8]) -> Recovery {
    read_log(bytes, true)
}

fn read_log(bytes: &[u8], check_ranges: bool) -> Recovery {
    let mut rec = Recovery::default();
    let mut at = 0usize;
    while let Some(rest) = bytes.get(at..).filter(|r| !r.is_empty()) {
        let one = decode_one(rest).and_then(|(cursor, len)| {
            if check_ranges {
                validate(&cursor).map_err(TornReason::OutOfRange)?;
            }
            Ok((cursor, len))
        });
        match one {
            Ok((cursor, len)) => {
                rec.cursor = Some(cursor);
                rec.records = rec.records.saturating_add(1);
                rec.last_record_len = len;
                at = at.saturating_add(len);
                rec.valid_len = at;
            }
            Err(reason) => {
                rec.torn = Some(TornTail { offset: at, reason });
                break;
            }
        }
    }
    rec
}
