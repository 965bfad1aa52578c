//! Durable cursor per input id and service: an append-only, CRC-framed log.
//!
//! Owns: the state file format (below), its pure codec (`encode_record`,
//! `decode_log`), and the file IO around it: create (mode 0600), exclusive lock,
//! recovery of a torn tail, append + `fsync` per checkpoint, compaction, `state
//! show`/`reset`, and the Reporting Web Service → Graph takeover. Must not: read
//! the clock (callers pass `now`), decide what a cursor means (the puller does),
//! or panic on any file content — every read goes through `get()`, checked
//! arithmetic and the bounds below.
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
//! # Opening files safely
//!
//! [`open_private`] opens state files (and the ledger, dead-letter and queue files
//! of other modules) with `O_NOFOLLOW | O_NONBLOCK`, then `fstat`s the descriptor:
//! it must be a regular file owned by this process's effective user. A symlink
//! planted in the state directory cannot make msgtrace chmod, truncate or overwrite
//! another file; a FIFO cannot block `open` (and with it SIGTERM) forever; a device
//! such as `/dev/zero` cannot be read into memory. Reads are bounded by
//! [`MAX_FILE_LEN`].
//!
//! # Locking
//!
//! `open` takes `flock(LOCK_EX | LOCK_NB)` on the file (mode 0600, directory
//! created 0700 when missing). flock locks belong to the open file description,
//! so a second `open` of the same file is refused even inside one process. The
//! refusal names the holder's pid from `/proc/locks` when it can. After locking,
//! `open` checks that the path still names the locked inode (a compaction may
//! have renamed a new file over it meanwhile) and retries if not.
//!
//! # Durability
//!
//! Each checkpoint is one `write` of the whole record followed by `fdatasync`;
//! a failed write or sync is `Error::State` (fatal, exit 3: after a failed
//! fsync the kernel may have dropped the dirty pages, so retrying proves
//! nothing). A failed write is cut back, best effort, to the last full record.
//! Creating the file and every rename fsync the directory.
//!
//! # Compaction
//!
//! When the file passes [`COMPACT_AT`] bytes (and four times the last record, so
//! that one big record does not compact on every checkpoint), the last record
//! is written alone to `<file>.tmp` in the same directory (locked before it is
//! visible), fsynced, renamed over the file, and the directory is fsynced. The
//! lock moves with the new file; a stale `.tmp` left by a crash is removed on open.
//!
//! # Version history
//!
//! - 1: first format. `tests/fixtures/state/001_v1.state` must keep loading.
//! - 2: two passes (settle cursor), window length, late/status counters; edge keys
//!   moved to the delivery ledger. `tests/fixtures/state/002_v2.state`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where an input/service stands. Times are epoch seconds UTC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Start of the window being pulled, or of the next window when `window_end == 0`.
    pub window_start: i64,
    /// End of the window being pulled; 0 when between windows.
    pub window_end: i64,
    /// Next page of the window being pulled, when it was paged part-way.
    pub next_link: Option<String>,
    /// Version 1 only: keys (see `record::record_key`) of records at the end edge of
    /// the last completed window. Never written (v2); the puller seeds them into the
    /// delivery ledger and clears them.
    pub edge_keys: Vec<u64>,
    pub requests: u64,
    pub sent: u64,
    pub filtered: u64,
    /// `reset_persistence_auth` value in force when this was written.
    pub reset_auth: Option<String>,
    /// `override_time_delay_in_seconds` in force when this was written.
    pub delay_secs: u64,
    /// The service that wrote it (`office365_exchange_message_service` / `_graph_service`).
    pub service: String,
    /// The settle pass: start of its window being read, or of its next one when
    /// `settle_end == 0`. Never ahead of `window_start`.
    pub settle_start: i64,
    /// End of the settle window being read; 0 when between settle windows.
    pub settle_end: i64,
    /// Next page of the settle window, when it was paged part-way.
    pub settle_link: Option<String>,
    /// Window length (seconds) sized by the record count of recent windows; 0: none yet.
    pub window_len: u64,
    /// Records the settle pass delivered that the first pass had not seen.
    pub late_events: u64,
    /// Records delivered again because their Status changed.
    pub status_changes: u64,
}

/// First byte of every record.
pub const MAGIC: u8 = 0xC7;
/// Payload format version written by this build.
pub const FORMAT_VERSION: u8 = 2;
/// The first format, still read (and migrated).
pub const FORMAT_V1: u8 = 1;
/// Bytes before the payload: magic, version, length, CRC.
pub const HEADER_LEN: usize = 10;
/// Largest payload accepted (1 MiB): room for every edge key and the longest link
/// below, small enough that a corrupt length cannot make us allocate much.
pub const MAX_RECORD_LEN: usize = 1 << 20;
/// Most edge keys kept (800 KB of keys): far above the records of one second of
/// one tenant, the edge the puller remembers.
pub const MAX_EDGE_KEYS: usize = 100_000;
/// Longest `next_link` (64 KiB): Microsoft's `$skiptoken` links are a few hundred bytes.
pub const MAX_LINK_LEN: usize = 64 * 1024;
/// Longest `service` name or `reset_auth` value (a service name is ~40 bytes, a date 10).
pub const MAX_TEXT_LEN: usize = 256;
/// File size past which it is compacted to its last record (64 KiB: ~2000
/// checkpoints, a few milliseconds to rewrite).
pub const COMPACT_AT: u64 = 64 * 1024;
/// Largest state file read at all (64 MiB): a bigger file is not ours.
pub const MAX_FILE_LEN: u64 = 64 << 20;
/// Earliest window instant a record may hold: 1970-01-01, the zero of a fresh cursor
/// (a start this old is clamped to the API's limit when the tenant starts).
pub const MIN_TIME: i64 = 0;
/// Latest window instant a record may hold: 2200-01-01T00:00:00Z.
pub const MAX_TIME: i64 = 7_258_118_400;
/// Longest window a record may hold (31 days: Graph's catch-up windows are at most 10
/// days, Reporting windows at most `window_in_seconds` ≤ 1 day).
pub const MAX_WINDOW_SPAN: i64 = 31 * 86_400;
/// Largest counter (`requests`, `sent`, `filtered`) a record may hold: 2^53, far above
/// anything a collector counts, far enough below `u64::MAX` that adding to it cannot wrap.
pub const MAX_COUNTER: u64 = 1 << 53;
/// Largest delay a record may hold (30 days; the config allows 2 days).
pub const MAX_DELAY_SECS: u64 = 30 * 86_400;

/// Service name encoded as tag 1.
const SERVICE_RWS: &str = "office365_exchange_message_service";
/// Service name encoded as tag 2.
const SERVICE_GRAPH: &str = "office365_exchange_message_graph_service";

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

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
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
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let head = self.buf.get(..n)?;
        self.buf = self.buf.get(n..)?;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn varint(&mut self) -> Option<u64> {
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

// ---------------------------------------------------------------- file IO

/// An open state file (locked against a second collector).
#[derive(Debug)]
pub struct StateFile {
    pub path: PathBuf,
    /// Things `open` repaired (torn tail cut, stale temp file, loose mode): the
    /// caller logs each at WARNING.
    pub warnings: Vec<String>,
    file: File,
    /// Current file length.
    len: u64,
    /// Bytes of the last record written or read.
    last_record_len: u64,
    /// The last cursor written or read, for compaction.
    last: Option<Cursor>,
}

/// The file name for an input id and service, under `dir`.
pub fn state_path(dir: &Path, input_id: &str, service: &str) -> PathBuf {
    dir.join(format!("{input_id}_{service}.state"))
}

fn state_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::State(format!("{}: {what}: {e}", path.display()))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsync a directory so a rename or create in it is durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| state_err(dir, "cannot fsync directory", e))
}

/// Who holds the flock on `file`, from /proc/locks (best effort).
fn lock_holder(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    let ino = meta.ino();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    let text = fs::read_to_string("/proc/locks").ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        let kind = f.get(1)?;
        let pid: u32 = f.get(4)?.parse().ok()?;
        let id = f.get(5)?;
        (*kind == "FLOCK" && (*id == want || id.ends_with(&format!(":{ino}"))) && pid != 0)
            .then_some(pid)
    })
}

/// Take the exclusive, non-blocking flock on `file`.
fn lock(file: &File, path: &Path) -> Result<()> {
    // SAFETY: flock on a valid, owned descriptor; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        let who = lock_holder(file).map_or("pid unknown".to_owned(), |p| format!("pid {p}?"));
        return Err(Error::State(format!(
            "state file {} is locked by another msgtrace process ({who}); stop it first \
             (two collectors on one input would send everything twice)",
            path.display()
        )));
    }
    Err(state_err(path, "cannot lock", err))
}

/// How [`open_private`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only; a missing file is `NotFound`.
    Read,
    /// Read and append, creating the file with mode 0600 when missing.
    AppendCreate,
}

/// Open a file msgtrace keeps for itself (state, ledger, dead-letter, queue) without
/// following a symlink and without blocking, and make sure it is a regular file owned
/// by this process's effective user. The `io::Error` of a refusal says why in words;
/// `NotFound` passes through so callers can treat a missing file as empty.
pub fn open_private(path: &Path, access: Access) -> std::io::Result<File> {
    use std::io::{Error as IoError, ErrorKind};
    let mut opts = OpenOptions::new();
    opts.read(true)
        // O_NOFOLLOW: a symlink in the last component fails with ELOOP instead of
        // being followed; O_NONBLOCK: a FIFO opens at once instead of waiting for a
        // writer (its fstat below then refuses it).
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    if access == Access::AppendCreate {
        opts.append(true).create(true).mode(0o600);
    }
    let file = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(IoError::new(
                ErrorKind::InvalidInput,
                "is a symbolic link, which msgtrace never follows for its own files (it \
                 could make it overwrite another file): remove the link, and put the real \
                 file there if it was moved on purpose",
            ))
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(IoError::new(
            ErrorKind::InvalidInput,
            "is not a regular file (a FIFO, socket or device?): remove it, msgtrace \
             creates its own file there",
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(IoError::new(
            ErrorKind::PermissionDenied,
            format!(
                "is owned by uid {}, not by the collector's user (uid {euid}): chown it to \
                 that user, or remove it",
                meta.uid()
            ),
        ));
    }
    Ok(file)
}

/// Read at most `max` bytes of `file`; more than `max` is an error (not ours).
pub fn read_bounded(file: &mut File, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes, more than any file msgtrace writes"),
        ));
    }
    Ok(bytes)
}

fn open_file(path: &Path) -> std::io::Result<File> {
    open_private(path, Access::AppendCreate)
}

/// True for a record the end of the file cut short: all a crash can leave.
fn is_cut_short(reason: &TornReason) -> bool {
    matches!(
        reason,
        TornReason::ShortHeader | TornReason::ShortPayload { .. }
    )
}

/// How often `open_locked` retries when a compaction replaced the file under it.
const LOCK_RETRIES: u32 = 8;

/// Open and lock `path`, making sure the locked inode is still the one the path
/// names: a compaction by the holder may rename a new file over it between our
/// open and our lock, leaving us a lock on an unlinked inode.
fn open_locked(path: &Path) -> Result<File> {
    for _ in 0..LOCK_RETRIES {
        let file = open_file(path).map_err(|e| state_err(path, "cannot open", e))?;
        lock(&file, path)?;
        let ours = file
            .metadata()
            .map_err(|e| state_err(path, "cannot stat", e))?;
        match fs::symlink_metadata(path) {
            Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => return Ok(file),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(state_err(path, "cannot stat", e)),
        }
    }
    Err(Error::State(format!(
        "{}: replaced {LOCK_RETRIES} times while being opened; another msgtrace process is \
         writing it",
        path.display()
    )))
}

impl StateFile {
    /// Open (creating, mode 0600) and lock; returns the last valid cursor, truncating a torn tail.
    pub fn open(path: &Path) -> Result<(StateFile, Option<Cursor>)> {
        let dir = parent_dir(path);
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| state_err(dir, "cannot create state directory", e))?;
        }
        let existed = path.exists();
        let mut file = open_locked(path)?;
        if !existed {
            sync_dir(dir)?;
        }
        let mut warnings = Vec::new();
        let meta = file
            .metadata()
            .map_err(|e| state_err(path, "cannot stat", e))?;
        if meta.mode() & 0o077 != 0 {
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(|e| state_err(path, "cannot set mode 0600", e))?;
            warnings.push(format!(
                "state file {} was readable by others (mode {:o}); set to 0600",
                path.display(),
                meta.mode() & 0o777
            ));
        }
        if meta.len() > MAX_FILE_LEN {
            return Err(Error::State(format!(
                "{}: {} bytes, larger than any state file ({MAX_FILE_LEN}); \
                 not a msgtrace state file? move it away or run `msgtrace state reset`",
                path.display(),
                meta.len()
            )));
        }
        let bytes =
            read_bounded(&mut file, MAX_FILE_LEN).map_err(|e| state_err(path, "cannot read", e))?;
        let rec = recover(&bytes);
        if let Some(torn) = &rec.torn {
            if let TornReason::NewerVersion(_) = torn.reason {
                return Err(Error::State(format!(
                    "{}: record at byte {}: {}; run the newer msgtrace, or `msgtrace state reset` \
                     to start over",
                    path.display(),
                    torn.offset,
                    torn.reason
                )));
            }
            if rec.records == 0 && !is_cut_short(&torn.reason) {
                return Err(Error::State(format!(
                    "{}: not a msgtrace state file ({} in its first record); left as it is — \
                     move it away (or run `msgtrace state reset`) and the input starts afresh",
                    path.display(),
                    torn.reason
                )));
            }
            file.set_len(rec.valid_len as u64)
                .and_then(|()| file.sync_data())
                .map_err(|e| state_err(path, "cannot truncate torn tail", e))?;
            warnings.push(format!(
                "state file {}: {} at byte {}; cut {} byte(s) back to the last valid checkpoint \
                 ({} record(s) kept)",
                path.display(),
                torn.reason,
                torn.offset,
                bytes.len().saturating_sub(rec.valid_len),
                rec.records
            ));
        }
        let tmp = tmp_path(path);
        if tmp.exists() {
            // We hold the lock, so no compaction of ours is running: it is a crash's leftover.
            fs::remove_file(&tmp)
                .map_err(|e| state_err(&tmp, "cannot remove stale temp file", e))?;
            warnings.push(format!(
                "removed {} left by an interrupted compaction",
                tmp.display()
            ));
        }
        let sf = StateFile {
            path: path.to_path_buf(),
            warnings,
            file,
            len: rec.valid_len as u64,
            last_record_len: rec.last_record_len as u64,
            last: rec.cursor.clone(),
        };
        Ok((sf, rec.cursor))
    }

    /// Append the cursor and fsync; compacts past a small bound. An error here is fatal.
    pub fn checkpoint(&mut self, cursor: &Cursor) -> Result<()> {
        if let Some(why) = check_bounds(cursor) {
            return Err(Error::State(format!(
                "{}: cannot checkpoint: {why}",
                self.path.display()
            )));
        }
        let rec = encode_record(cursor);
        if let Err(e) = self.file.write_all(&rec) {
            // Best effort: cut a partial record so that a caller who carries on
            // anyway does not bury later records behind it (open would cut it too).
            let _ = self.file.set_len(self.len);
            return Err(state_err(&self.path, "cannot write checkpoint", e));
        }
        self.file
            .sync_data()
            .map_err(|e| state_err(&self.path, "cannot fsync checkpoint", e))?;
        self.len = self.len.saturating_add(rec.len() as u64);
        self.last_record_len = rec.len() as u64;
        self.last = Some(cursor.clone());
        if self.needs_compaction() {
            self.compact()?;
        }
        Ok(())
    }

    /// Current size of the file in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when no record has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn needs_compaction(&self) -> bool {
        self.len > COMPACT_AT && self.len > self.last_record_len.saturating_mul(4)
    }

    /// Rewrite the file as its last record alone (temp + fsync + rename + dir fsync).
    pub fn compact(&mut self) -> Result<()> {
        let Some(last) = &self.last else {
            return Ok(());
        };
        let rec = encode_record(last);
        let tmp = tmp_path(&self.path);
        // We hold the lock on the file, so a `.tmp` here is a crash's leftover.
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(state_err(&tmp, "cannot remove stale temp file", e)),
        }
        let t = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| state_err(&tmp, "cannot create compaction file", e))?;
        // Lock before the rename makes it visible under the real name; the
        // lock then moves with it, and `t` becomes the file we append to.
        lock(&t, &tmp)?;
        let res = (&t)
            .write_all(&rec)
            .and_then(|()| t.sync_all())
            .map_err(|e| state_err(&tmp, "cannot write compaction file", e))
            .and_then(|()| {
                fs::rename(&tmp, &self.path)
                    .map_err(|e| state_err(&self.path, "cannot rename compacted file", e))
            });
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // The old inode and its lock go away here.
        self.file = t;
        sync_dir(parent_dir(&self.path))?;
        self.len = rec.len() as u64;
        self.last_record_len = rec.len() as u64;
        Ok(())
    }

    /// Test hook: a `StateFile` writing to an already open `file` (e.g. `/dev/full`),
    /// without lock or recovery, to prove write failures surface as `Error::State`.
    pub fn open_at(path: &Path, file: File) -> StateFile {
        StateFile {
            path: path.to_path_buf(),
            warnings: Vec::new(),
            file,
            len: 0,
            last_record_len: 0,
            last: None,
        }
    }
}

/// Remove a state file (`msgtrace state reset`); `false` when there was none.
/// Refuses while a collector holds it.
pub fn reset(path: &Path) -> Result<bool> {
    let file = match open_private(path, Access::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(state_err(path, "cannot open", e)),
    };
    lock(&file, path)?;
    fs::remove_file(path).map_err(|e| state_err(path, "cannot remove", e))?;
    let _ = fs::remove_file(tmp_path(path));
    sync_dir(parent_dir(path))?;
    Ok(true)
}

/// Read a state file without locking (`msgtrace state show`): the last valid
/// cursor and the file size, `None` when missing or holding no valid record.
pub fn peek(path: &Path) -> Result<Option<(Cursor, u64)>> {
    let mut file = match open_private(path, Access::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(state_err(path, "cannot open", e)),
    };
    let bytes =
        read_bounded(&mut file, MAX_FILE_LEN).map_err(|e| state_err(path, "cannot read", e))?;
    let size = bytes.len() as u64;
    Ok(recover(&bytes).cursor.map(|c| (c, size)))
}

/// One pass's window in words: being read (paged part-way or not), or the next one.
fn describe_window(start: i64, end: i64, link: bool) -> String {
    use crate::time::rfc3339;
    if end != 0 {
        let paged = if link {
            ", paged part-way (resumes at the saved next page)"
        } else {
            ""
        };
        format!("{} .. {} being pulled{paged}", rfc3339(start), rfc3339(end))
    } else {
        format!("next one starts at {}", rfc3339(start))
    }
}

/// A cursor in plain words for `state show`, one fact per line: both passes' cursors.
pub fn describe(c: &Cursor, now: i64) -> String {
    use crate::time::human_duration;
    let mut s = String::new();
    s.push_str(&format!("service: {}\n", c.service));
    s.push_str(&format!(
        "window: {}\n",
        describe_window(c.window_start, c.window_end, c.next_link.is_some())
    ));
    s.push_str(&format!(
        "settle pass: {}\n",
        describe_window(c.settle_start, c.settle_end, c.settle_link.is_some())
    ));
    let target = now.saturating_sub(i64::try_from(c.delay_secs).unwrap_or(i64::MAX));
    let behind = target.saturating_sub(c.settle_start);
    s.push_str(&format!(
        "lag: {} behind now; settle pass {} behind the target (now - {} delay)\n",
        human_duration(now.saturating_sub(c.window_start)),
        human_duration(behind),
        human_duration(i64::try_from(c.delay_secs).unwrap_or(i64::MAX))
    ));
    s.push_str(&format!(
        "counters: {} request(s) made, {} event(s) sent, {} event(s) filtered, {} late event(s), {} status change(s)\n",
        c.requests, c.sent, c.filtered, c.late_events, c.status_changes
    ));
    if c.window_len != 0 {
        s.push_str(&format!(
            "window length: {} (sized by record count)\n",
            human_duration(i64::try_from(c.window_len).unwrap_or(i64::MAX))
        ));
    }
    s.push_str(&format!(
        "reset_persistence_auth: {}\n",
        c.reset_auth.as_deref().unwrap_or("(none)")
    ));
    s
}

/// Move a tenant's cursor from one service to another (SPEC §2: Reporting Web
/// Service → Graph, or back). When the target holds no cursor and the source
/// does, the source's cursor is written to the target file and the source file
/// is renamed to `<name>.migrated` so that a later move back takes over the
/// newer cursor instead of resuming a stale one. Returns the cursor taken over
/// (the caller logs it, then opens the target as usual and finds it there);
/// `None` when nothing was taken over.
///
/// The cursor taken over has its service renamed and a window in progress
/// given up: `next_link` is dropped (a page link of one API means nothing to
/// the other) and `window_end` set to 0, so the new service sizes its own
/// window from the same `window_start` — nothing is skipped, at most that one
/// window is sent again. Edge keys (both APIs key records by trace id and
/// recipient), counters, delay and reset_auth are kept.
///
/// Crash safety: the target is written and fsynced before the source is
/// renamed; a crash between leaves both, and the next start uses the target.
pub fn take_over(
    dir: &Path,
    input_id: &str,
    from_service: &str,
    to_service: &str,
) -> Result<Option<Cursor>> {
    let target = state_path(dir, input_id, to_service);
    if peek(&target)?.is_some() {
        return Ok(None);
    }
    let source = state_path(dir, input_id, from_service);
    if !source.exists() {
        return Ok(None);
    }
    let (src, cursor) = StateFile::open(&source)?;
    let Some(mut cursor) = cursor else {
        return Ok(None);
    };
    cursor.service = to_service.to_owned();
    cursor.next_link = None;
    cursor.window_end = 0;
    cursor.settle_link = None;
    cursor.settle_end = 0;
    {
        let (mut t, _) = StateFile::open(&target)?;
        t.checkpoint(&cursor)?;
    }
    let mut retired = source.as_os_str().to_owned();
    retired.push(".migrated");
    fs::rename(&source, &retired)
        .map_err(|e| state_err(&source, "cannot rename after takeover", e))?;
    sync_dir(parent_dir(&source))?;
    drop(src);
    Ok(Some(cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic PRNG (splitmix64) for generated cursors.
    pub struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn text(&mut self, max: usize) -> String {
            let n = self.below(max as u64 + 1) as usize;
            (0..n)
                .map(|_| match self.below(4) {
                    0 => 'é',
                    1 => '/',
                    _ => char::from(b'a' + self.below(26) as u8),
                })
                .collect::<String>()
                .chars()
                .take(n)
                .collect()
        }
    }

    fn gen(r: &mut Rng) -> Cursor {
        let pick = |r: &mut Rng, v: i64| match r.below(4) {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => 0,
            _ => v,
        };
        let ws = 1_700_000_000 + r.below(100_000_000) as i64;
        Cursor {
            window_start: if r.below(10) == 0 { pick(r, ws) } else { ws },
            window_end: if r.below(2) == 0 { 0 } else { ws + 900 },
            next_link: (r.below(2) == 0).then(|| r.text(300)),
            edge_keys: Vec::new(),
            requests: r.next() >> r.below(64),
            sent: r.next() >> r.below(64),
            filtered: r.next() >> r.below(64),
            reset_auth: (r.below(2) == 0).then(|| r.text(10)),
            delay_secs: r.below(172_801),
            service: match r.below(3) {
                0 => SERVICE_RWS.to_owned(),
                1 => SERVICE_GRAPH.to_owned(),
                _ => r.text(40),
            },
            settle_start: ws - r.below(90_000) as i64,
            settle_end: if r.below(2) == 0 { 0 } else { ws + 60 },
            settle_link: (r.below(2) == 0).then(|| r.text(300)),
            window_len: r.below(900_000),
            late_events: r.next() >> r.below(64),
            status_changes: r.next() >> r.below(64),
        }
    }

    #[test]
    fn crc_matches_known_vectors() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        assert_eq!(crc32_update(crc32(b"12345"), b"6789"), 0xCBF4_3926);
    }

    #[test]
    fn varint_and_zigzag_edges() {
        for v in [0u64, 1, 127, 128, 300, u64::MAX, u64::MAX - 1, 1 << 63] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(Reader { buf: &out }.varint(), Some(v));
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        // 11 continuation bytes, or a 10th byte carrying too much: rejected.
        assert_eq!(Reader { buf: &[0xFF; 11] }.varint(), None);
        let mut over = vec![0xFF; 9];
        over.push(0x02);
        assert_eq!(Reader { buf: &over }.varint(), None);
    }

    #[test]
    fn round_trips_generated_cursors() {
        let mut r = Rng(1);
        for _ in 0..2000 {
            let c = gen(&mut r);
            let bytes = encode_record(&c);
            let rec = decode_log(&bytes);
            assert_eq!(rec.torn, None);
            assert_eq!(rec.cursor.as_ref(), Some(&c));
            assert_eq!(rec.valid_len, bytes.len());
        }
    }

    #[test]
    fn last_record_wins() {
        let mut r = Rng(2);
        let cs: Vec<Cursor> = (0..5).map(|_| gen(&mut r)).collect();
        let log: Vec<u8> = cs.iter().flat_map(encode_record).collect();
        let rec = decode_log(&log);
        assert_eq!(rec.cursor.as_ref(), cs.last());
        assert_eq!(rec.records, 5);
        assert_eq!(decode_log(&[]), Recovery::default());
    }

    #[test]
    fn torn_at_every_offset_recovers_previous() {
        let mut r = Rng(3);
        let a = gen(&mut r);
        let b = gen(&mut r);
        let ea = encode_record(&a);
        let mut log = ea.clone();
        log.extend(encode_record(&b));
        for cut in ea.len()..log.len() {
            let rec = decode_log(&log[..cut]);
            assert_eq!(rec.cursor.as_ref(), Some(&a), "cut at {cut}");
            assert_eq!(rec.valid_len, ea.len());
            let torn_expected = cut > ea.len();
            assert_eq!(rec.torn.is_some(), torn_expected, "cut at {cut}");
            if let Some(t) = rec.torn {
                assert_eq!(t.offset, ea.len());
            }
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut r = Rng(4);
        let a = gen(&mut r);
        let mut b = gen(&mut r);
        b.next_link = Some("https://x/?$skiptoken=2000".into());
        let ea = encode_record(&a);
        let mut log = ea.clone();
        log.extend(encode_record(&b));
        for byte in ea.len()..log.len() {
            for bit in 0..8 {
                let mut bad = log.clone();
                bad[byte] ^= 1 << bit;
                let rec = decode_log(&bad);
                assert_eq!(rec.cursor.as_ref(), Some(&a), "flip {byte}.{bit}");
                assert_eq!(rec.torn.map(|t| t.offset), Some(ea.len()));
            }
        }
    }

    #[test]
    fn newer_version_with_good_crc_is_named() {
        let mut bytes = encode_record(&Cursor::default());
        bytes[1] = 9;
        let crc = crc32_update(crc32(&bytes[..6]), &bytes[HEADER_LEN..]);
        bytes[6..10].copy_from_slice(&crc.to_le_bytes());
        let rec = decode_log(&bytes);
        assert_eq!(rec.torn.unwrap().reason, TornReason::NewerVersion(9));
    }

    #[test]
    fn mutated_and_random_inputs_never_panic() {
        let mut r = Rng(5);
        let base: Vec<u8> = (0..4).flat_map(|_| encode_record(&gen(&mut r))).collect();
        for _ in 0..5000 {
            let mut m = base.clone();
            for _ in 0..=r.below(8) {
                let i = r.below(m.len() as u64) as usize;
                match r.below(4) {
                    0 => m[i] = r.next() as u8,
                    1 => m.truncate(i),
                    2 => m.insert(i, r.next() as u8),
                    _ => {
                        if i + 6 <= m.len() {
                            m[i..i + 4].copy_from_slice(&(r.next() as u32).to_le_bytes());
                        }
                    }
                }
                if m.is_empty() {
                    break;
                }
            }
            let rec = decode_log(&m);
            assert!(rec.valid_len <= m.len());
        }
        for _ in 0..5000 {
            let n = r.below(200) as usize;
            let mut v: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
            if r.below(2) == 0 && !v.is_empty() {
                v[0] = MAGIC;
            }
            let _ = decode_log(&v);
        }
    }

    #[test]
    fn bytes_per_checkpoint_are_small() {
        let c = Cursor {
            window_start: 1_790_000_000,
            window_end: 0,
            next_link: None,
            edge_keys: vec![],
            requests: 12_345,
            sent: 1_234_567,
            filtered: 42,
            reset_auth: Some("2026-01-01".into()),
            delay_secs: 90_000,
            service: SERVICE_GRAPH.into(),
            settle_start: 1_789_910_000,
            settle_end: 0,
            settle_link: None,
            window_len: 86_400,
            late_events: 1234,
            status_changes: 567,
        };
        let n = encode_record(&c).len();
        // header 10 + ~36 first-pass fields + ~16 settle fields and counters
        assert!(n <= 10 + 40 + 24, "{n}");
        let bare = c.clone();
        let paged = Cursor {
            window_end: c.window_start + 900,
            next_link: Some("x".repeat(150)),
            ..bare.clone()
        };
        eprintln!(
            "state: bytes per checkpoint: {} between windows ({n} with counters), {} paged with a 150-byte link",
            encode_record(&bare).len(),
            encode_record(&paged).len()
        );
    }

    fn plausible() -> Cursor {
        Cursor {
            window_start: 1_780_000_000,
            window_end: 1_780_000_900,
            next_link: Some("https://h/p?$skiptoken=1".into()),
            requests: 5,
            sent: 7,
            delay_secs: 90_000,
            service: SERVICE_RWS.into(),
            ..Cursor::default()
        }
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert_eq!(validate(&plausible()), Ok(()));
        let between = Cursor {
            window_end: 0,
            next_link: None,
            ..plausible()
        };
        assert_eq!(validate(&between), Ok(()));
        let bad: Vec<(&str, Cursor)> = vec![
            (
                "start i64::MIN",
                Cursor {
                    window_start: i64::MIN,
                    ..plausible()
                },
            ),
            (
                "start -1",
                Cursor {
                    window_start: -1,
                    window_end: 0,
                    next_link: None,
                    ..plausible()
                },
            ),
            (
                "start after 2200",
                Cursor {
                    window_start: MAX_TIME + 1,
                    window_end: 0,
                    next_link: None,
                    ..plausible()
                },
            ),
            (
                "end i64::MAX",
                Cursor {
                    window_end: i64::MAX,
                    ..plausible()
                },
            ),
            (
                "end before start",
                Cursor {
                    window_end: 1_779_999_000,
                    ..plausible()
                },
            ),
            (
                "end == start",
                Cursor {
                    window_end: 1_780_000_000,
                    ..plausible()
                },
            ),
            (
                "window of 40 days",
                Cursor {
                    window_end: 1_780_000_000 + 40 * 86_400,
                    ..plausible()
                },
            ),
            (
                "link between windows",
                Cursor {
                    window_end: 0,
                    ..plausible()
                },
            ),
            (
                "empty link",
                Cursor {
                    next_link: Some(String::new()),
                    ..plausible()
                },
            ),
            (
                "control char in link",
                Cursor {
                    next_link: Some("https://h/\r\nX: y".into()),
                    ..plausible()
                },
            ),
            (
                "requests u64::MAX",
                Cursor {
                    requests: u64::MAX,
                    ..plausible()
                },
            ),
            (
                "sent",
                Cursor {
                    sent: MAX_COUNTER + 1,
                    ..plausible()
                },
            ),
            (
                "filtered",
                Cursor {
                    filtered: MAX_COUNTER + 1,
                    ..plausible()
                },
            ),
            (
                "delay",
                Cursor {
                    delay_secs: MAX_DELAY_SECS + 1,
                    ..plausible()
                },
            ),
        ];
        for (what, c) in bad {
            assert!(validate(&c).is_err(), "{what}");
            // The codec still reads it; `recover` treats it as a corrupt record.
            let mut bytes = encode_record(&plausible());
            let first = bytes.len();
            bytes.extend_from_slice(&encode_record(&c));
            assert_eq!(decode_log(&bytes).torn, None, "{what}");
            let rec = recover(&bytes);
            assert_eq!(rec.cursor, Some(plausible()), "{what}");
            assert_eq!(rec.valid_len, first, "{what}");
            assert!(
                matches!(rec.torn, Some(TornTail { offset, reason: TornReason::OutOfRange(_) }) if offset == first),
                "{what}: {:?}",
                rec.torn
            );
        }
    }

    #[test]
    fn generated_cursors_recover_iff_plausible() {
        let mut r = Rng(11);
        for _ in 0..2000 {
            let c = gen(&mut r);
            let rec = recover(&encode_record(&c));
            assert_eq!(rec.cursor.is_some(), validate(&c).is_ok(), "{c:?}");
        }
    }

    #[test]
    fn bounds_are_enforced() {
        // Version 1 bounded its edge keys; a v1 record past the bound does not decode.
        let c = Cursor {
            edge_keys: vec![0; MAX_EDGE_KEYS + 1],
            ..Cursor::default()
        };
        let rec = decode_log(&encode_record_v1(&c));
        assert!(matches!(
            rec.torn.unwrap().reason,
            TornReason::BadPayload(_)
        ));
        // Version 2 writes no edge keys at all: 100,002 of them cannot stop a checkpoint.
        assert!(check_bounds(&c).is_none());
        assert!(encode_record(&c).len() < 64);
        let long = Cursor {
            settle_link: Some("x".repeat(MAX_LINK_LEN + 1)),
            ..Cursor::default()
        };
        assert!(check_bounds(&long).is_some());
        let ok = Cursor {
            next_link: Some("x".repeat(MAX_LINK_LEN)),
            settle_link: Some("y".repeat(MAX_LINK_LEN)),
            service: "s".repeat(MAX_TEXT_LEN),
            reset_auth: Some("r".repeat(MAX_TEXT_LEN)),
            ..Cursor::default()
        };
        assert!(check_bounds(&ok).is_none());
        assert!(encode_record(&ok).len() <= HEADER_LEN + MAX_RECORD_LEN);
        assert_eq!(decode_log(&encode_record(&ok)).cursor, Some(ok));
    }

    #[test]
    fn describe_in_words() {
        let c = Cursor {
            window_start: 1_000_000,
            window_end: 1_000_900,
            next_link: Some("n".into()),
            delay_secs: 3600,
            service: SERVICE_RWS.into(),
            sent: 5,
            settle_start: 1_000_000,
            ..Cursor::default()
        };
        let d = describe(&c, 1_000_000 + 2 * 86_400);
        assert!(
            d.contains(
                "window: 1970-01-12T13:46:40Z .. 1970-01-12T14:01:40Z being pulled, paged part-way"
            ),
            "{d}"
        );
        assert!(
            d.contains("settle pass: next one starts at 1970-01-12T13:46:40Z"),
            "{d}"
        );
        assert!(
            d.contains("lag: 2d 0h behind now; settle pass 1d 23h behind the target"),
            "{d}"
        );
        assert!(d.contains("5 event(s) sent"), "{d}");
    }
}
