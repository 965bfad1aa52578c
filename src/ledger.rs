//! The delivery ledger: per input, what was delivered, so that no dedup decision
//! depends on what happens to be in memory (SPEC §3 "Two passes and the delivery
//! ledger", §6).
//!
//! Owns: the ledger file format (below), its pure codec, the file IO around it
//! (append + `fdatasync` per confirmed page, recovery of a torn tail, pruning by
//! compaction) and [`WindowSet`], the in-memory part of the ledger that one window's
//! dedup decisions are made against. Must not: read the clock, decide windows (the
//! puller does), hold more than one window's entries in memory, or panic on any file
//! content — every read goes through `get()`, checked arithmetic and the bounds below.
//!
//! # What an entry is
//!
//! One delivered record: its `Received` instant (epoch seconds UTC; the query window's
//! start when the record has none), its identity key (`record::record_key` of
//! (MessageTraceId, RecipientAddress) — the same under both APIs, so a takeover
//! dedups against what the other API delivered) and a 16-bit code of its Status
//! ([`status_code`]). The pair (key, status code) is the fingerprint: a record whose
//! Status changed has a new fingerprint and is sent again, once.
//!
//! # File format (version 1)
//!
//! `<dir>/<input_id>.ledger`, one file per input id whatever the service. A sequence
//! of records, framed like the state file (`state.rs`) but with their own magic:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | magic `0xC8` ([`MAGIC`]) |
//! | 1 | 1 | format version `1` ([`FORMAT_VERSION`]) |
//! | 2 | 4 | payload length `n`, u32 LE, at most [`MAX_RECORD_LEN`] |
//! | 6 | 4 | CRC-32 (zlib's) over header bytes 0..6 then the payload, u32 LE |
//! | 10 | n | payload |
//!
//! Payload: `base` (zigzag varint, epoch seconds), `count` (varint, at most
//! [`MAX_ENTRIES_PER_RECORD`]), then `count` entries, each `delta` (zigzag varint:
//! received − base), `key` (u64 LE), `status` (u16 LE). A record is one confirmed page;
//! an entry costs 11–13 bytes on disk (10 for the fields, 1–3 for the delta), plus
//! 10 + ~4 bytes of framing per page.
//!
//! # Recovery, pruning
//!
//! As the state file: the first record that is cut short or fails its CRC ends the
//! log and is truncated (an append is fsynced before the checkpoint that relies on it,
//! so only the last record can be torn by a crash); a file whose FIRST record is
//! invalid is refused, not truncated (it is not ours). [`Ledger::prune`] drops entries
//! received before a bound (the settle pass is past them) by writing the kept ones to
//! `<file>.tmp`, fsync, rename, directory fsync — only when at least half the file
//! would go, so pruning costs O(1) amortised per entry.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::state::{crc32, crc32_update, put_varint, unzigzag, zigzag, Reader};

/// First byte of every ledger record (the state file uses 0xC7).
pub const MAGIC: u8 = 0xC8;
/// Payload format version written by this build.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 10;
/// Most entries in one record: a page is capped at 10 × the API's page maximum
/// (50,000 Graph rows), so one record always holds one page.
pub const MAX_ENTRIES_PER_RECORD: usize = 50_000;
/// Largest payload (13 bytes an entry at most, plus the base and count).
pub const MAX_RECORD_LEN: usize = MAX_ENTRIES_PER_RECORD * 13 + 20;
/// Bytes read from the file per `read` while loading a window.
const READ_CHUNK: usize = 64 * 1024;
/// Size below which the ledger is never compacted (a few pages).
pub const PRUNE_MIN_BYTES: u64 = 256 * 1024;
/// Largest ledger file read at all: 1 GiB (80 M entries, far above 1 M records a day
/// kept for two days).
pub const MAX_FILE_LEN: u64 = 1 << 30;

/// One delivered record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    pub received: i64,
    pub key: u64,
    pub status: u16,
}

/// The status code of an entry that matches every Status: keys migrated from a
/// version 1 state file's edge keys, which carried no Status. [`status_code`] never
/// returns it.
pub const STATUS_ANY: u16 = 0;

/// 16-bit code of a Status, compared case-insensitively (Graph writes `delivered`,
/// the Reporting Web Service `Delivered`). Two statuses of one record colliding
/// (1 in 65,536) would hide one status change; never a record. Never
/// [`STATUS_ANY`].
pub fn status_code(status: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in status.bytes() {
        h ^= u32::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0193);
    }
    // Fold the 32-bit FNV-1a to 16 bits (xor-fold keeps every input bit).
    let folded = (h >> 16) ^ (h & 0xFFFF);
    u16::try_from(folded).unwrap_or(u16::MAX).max(1)
}

// ---------------------------------------------------------------- codec

/// Append one framed record holding `entries` (at most [`MAX_ENTRIES_PER_RECORD`];
/// the caller splits larger pages) to `out`.
pub fn encode_record(entries: &[Entry], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[MAGIC, FORMAT_VERSION, 0, 0, 0, 0, 0, 0, 0, 0]);
    let base = entries.first().map_or(0, |e| e.received);
    put_varint(out, zigzag(base));
    put_varint(out, u64::try_from(entries.len()).unwrap_or(0));
    for e in entries {
        put_varint(out, zigzag(e.received.wrapping_sub(base)));
        out.extend_from_slice(&e.key.to_le_bytes());
        out.extend_from_slice(&e.status.to_le_bytes());
    }
    let payload_at = start.saturating_add(HEADER_LEN);
    let len = u32::try_from(out.len().saturating_sub(payload_at)).unwrap_or(u32::MAX);
    if let Some(b) = out.get_mut(start.saturating_add(2)..start.saturating_add(6)) {
        b.copy_from_slice(&len.to_le_bytes());
    }
    let crc = crc32_update(
        crc32(out.get(start..start.saturating_add(6)).unwrap_or_default()),
        out.get(payload_at..).unwrap_or_default(),
    );
    if let Some(b) = out.get_mut(start.saturating_add(6)..payload_at) {
        b.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Why a ledger log ends before the end of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Torn {
    /// Cut short: more bytes are needed (at the end of the file: a torn append).
    Short,
    /// Bad magic, length, CRC or payload.
    Corrupt(&'static str),
    /// CRC is right but the version is unknown: written by a newer msgtrace.
    Newer(u8),
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = bytes.get(at..at.saturating_add(4)) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

/// Decode the record at the start of `bytes`, calling `each` for every entry.
/// Returns the record's length. Entries are handed out only once the whole record
/// has checked out (CRC first), so a torn record yields nothing.
pub fn decode_record(
    bytes: &[u8],
    mut each: impl FnMut(Entry),
) -> std::result::Result<usize, Torn> {
    let header = bytes.get(..HEADER_LEN).ok_or(Torn::Short)?;
    if header.first() != Some(&MAGIC) {
        return Err(Torn::Corrupt("bad magic byte"));
    }
    let len = usize::try_from(u32_at(header, 2))
        .ok()
        .filter(|&l| l <= MAX_RECORD_LEN)
        .ok_or(Torn::Corrupt("record length above the limit"))?;
    let total = HEADER_LEN.checked_add(len).ok_or(Torn::Corrupt("length"))?;
    let payload = bytes.get(HEADER_LEN..total).ok_or(Torn::Short)?;
    let crc = crc32_update(crc32(header.get(..6).unwrap_or_default()), payload);
    if crc != u32_at(header, 6) {
        return Err(Torn::Corrupt("crc mismatch"));
    }
    let version = header.get(1).copied().unwrap_or(0);
    if version != FORMAT_VERSION {
        return Err(Torn::Newer(version));
    }
    let mut r = Reader { buf: payload };
    let base = unzigzag(r.varint().ok_or(Torn::Corrupt("base"))?);
    let count = usize::try_from(r.varint().ok_or(Torn::Corrupt("count"))?)
        .ok()
        .filter(|&n| n <= MAX_ENTRIES_PER_RECORD)
        .ok_or(Torn::Corrupt("too many entries"))?;
    // Validate the whole payload before handing out any entry.
    let mut check = Reader { buf: r.buf };
    for _ in 0..count {
        check.varint().ok_or(Torn::Corrupt("delta"))?;
        check.take(10).ok_or(Torn::Corrupt("entry cut short"))?;
    }
    if !check.buf.is_empty() {
        return Err(Torn::Corrupt("trailing bytes"));
    }
    for _ in 0..count {
        let delta = unzigzag(r.varint().ok_or(Torn::Corrupt("delta"))?);
        let fields = r.take(10).ok_or(Torn::Corrupt("entry cut short"))?;
        let mut k = [0u8; 8];
        k.copy_from_slice(fields.get(..8).ok_or(Torn::Corrupt("key"))?);
        let mut s = [0u8; 2];
        s.copy_from_slice(fields.get(8..10).ok_or(Torn::Corrupt("status"))?);
        each(Entry {
            received: base.wrapping_add(delta),
            key: u64::from_le_bytes(k),
            status: u16::from_le_bytes(s),
        });
    }
    Ok(total)
}

// ---------------------------------------------------------------- window set

/// What the ledger says about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Delivered before with this Status: filter it.
    Delivered,
    /// Delivered before, with another Status: send it again (a status change).
    StatusChanged,
    /// Never delivered: send it.
    New,
}

/// The ledger entries of one window, plus what this window delivered since: every
/// dedup decision of the window is made against it.
#[derive(Debug, Default)]
pub struct WindowSet {
    /// Fingerprints (key mixed with the status code).
    fingerprints: HashSet<u64>,
    /// Identity keys, to tell a status change from a record never seen.
    keys: HashSet<u64>,
    /// Some entry has [`STATUS_ANY`] (a migrated version 1 edge key).
    any: bool,
}

fn fingerprint(key: u64, status: u16) -> u64 {
    // Mix the status into the key with an odd multiplier: (key, status) pairs of
    // distinct records collide only as often as two random 64-bit keys do.
    key ^ u64::from(status).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl WindowSet {
    pub fn check(&self, key: u64, status: u16) -> Seen {
        if self.fingerprints.contains(&fingerprint(key, status))
            || (self.any && self.fingerprints.contains(&fingerprint(key, STATUS_ANY)))
        {
            Seen::Delivered
        } else if self.keys.contains(&key) {
            Seen::StatusChanged
        } else {
            Seen::New
        }
    }

    pub fn insert(&mut self, key: u64, status: u16) {
        self.any |= status == STATUS_ANY;
        self.fingerprints.insert(fingerprint(key, status));
        self.keys.insert(key);
    }

    /// Forget entries inserted but not delivered (the output lost the page).
    pub fn remove(&mut self, key: u64, status: u16) {
        self.fingerprints.remove(&fingerprint(key, status));
        // The identity stays only if another status of it is still known; a stray key
        // here would only turn a "new" into a "status change" in the statistics.
        self.keys.remove(&key);
    }

    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }
}

// ---------------------------------------------------------------- file IO

/// Ledger file of an input id.
pub fn ledger_path(dir: &Path, input_id: &str) -> PathBuf {
    dir.join(format!("{input_id}.ledger"))
}

/// Remove the ledger (or another per-input file: the detail queue) at `path`
/// (`msgtrace state reset`, after the state files were removed under their lock);
/// `false` when there was none.
pub fn remove(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path, "cannot remove", e)),
    }
}

/// An open ledger file.
#[derive(Debug)]
pub struct Ledger {
    pub path: PathBuf,
    /// What `open` repaired (a torn tail cut): the caller logs each at WARNING.
    pub warnings: Vec<String>,
    file: File,
    len: u64,
    /// Reused encode buffer.
    buf: Vec<u8>,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::State(format!("{}: {what}: {e}", path.display()))
}

/// Open without following a symlink and without blocking on a FIFO; refuse anything
/// but a regular file owned by this user.
fn open_private(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            Error::State(format!(
                "{}: cannot open the delivery ledger: {e} — it must be a regular file (not a symlink) in the persistence directory",
                path.display()
            ))
        })?;
    let meta = file
        .metadata()
        .map_err(|e| io_err(path, "cannot stat the delivery ledger", e))?;
    if !meta.file_type().is_file() {
        return Err(Error::State(format!(
            "{}: the delivery ledger is not a regular file — remove it (msgtrace creates it)",
            path.display()
        )));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(Error::State(format!(
            "{}: the delivery ledger belongs to uid {}, not to this process (uid {me}) — fix its owner",
            path.display(),
            meta.uid()
        )));
    }
    Ok(file)
}

/// Walk every valid record of `file` from offset 0, bounded by [`MAX_FILE_LEN`];
/// returns (valid length, why it ended early if it did).
fn scan_file(
    file: &mut File,
    path: &Path,
    mut each: impl FnMut(Entry),
) -> Result<(u64, Option<Torn>)> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_err(path, "cannot read the delivery ledger", e))?;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut valid: u64 = 0;
    let mut eof = false;
    let mut total_read: u64 = 0;
    loop {
        // Parse every whole record in the buffer.
        let mut at = 0usize;
        let torn = loop {
            let rest = buf.get(at..).unwrap_or_default();
            if rest.is_empty() {
                break None;
            }
            match decode_record(rest, &mut each) {
                Ok(n) => {
                    at = at.saturating_add(n);
                    valid = valid.saturating_add(u64::try_from(n).unwrap_or(0));
                }
                Err(t) => break Some(t),
            }
        };
        buf.drain(..at.min(buf.len()));
        match torn {
            None | Some(Torn::Short) if !eof => {}
            None => return Ok((valid, None)),
            Some(t) => return Ok((valid, Some(t))),
        }
        // Read more: at least a chunk, or the rest of a long record.
        let before = buf.len();
        buf.resize(before.saturating_add(READ_CHUNK), 0);
        let n = file
            .read(buf.get_mut(before..).unwrap_or_default())
            .map_err(|e| io_err(path, "cannot read the delivery ledger", e))?;
        buf.truncate(before.saturating_add(n));
        total_read = total_read.saturating_add(u64::try_from(n).unwrap_or(0));
        if n == 0 {
            eof = true;
        }
        if total_read > MAX_FILE_LEN {
            return Err(Error::State(format!(
                "{}: the delivery ledger is larger than {} bytes — it is not one msgtrace wrote; move it away",
                path.display(),
                MAX_FILE_LEN
            )));
        }
    }
}

impl Ledger {
    /// Open (creating) the ledger at `path`: check every record, cut a torn tail,
    /// refuse a file whose first record is not a ledger record.
    pub fn open(path: &Path) -> Result<Ledger> {
        let mut file = open_private(path)?;
        let mut warnings = Vec::new();
        let (valid, torn) = scan_file(&mut file, path, |_| {})?;
        let actual = file
            .metadata()
            .map_err(|e| io_err(path, "cannot stat the delivery ledger", e))?
            .len();
        if let Some(t) = torn {
            if let Torn::Newer(v) = t {
                return Err(Error::State(format!(
                    "{}: written by a newer msgtrace (ledger format {v}, this one reads {FORMAT_VERSION}) — run that version or move the file away",
                    path.display()
                )));
            }
            if valid == 0 && actual > 0 {
                return Err(Error::State(format!(
                    "{}: not a msgtrace delivery ledger (its first record is invalid) — move it away; msgtrace creates a new one",
                    path.display()
                )));
            }
            warnings.push(format!(
                "{}: torn tail at byte {valid} ({} bytes) cut: the last page is pulled again and filtered",
                path.display(),
                actual.saturating_sub(valid)
            ));
            file.set_len(valid)
                .and_then(|()| file.sync_data())
                .map_err(|e| io_err(path, "cannot cut the torn tail of the delivery ledger", e))?;
        }
        Ok(Ledger {
            path: path.to_path_buf(),
            warnings,
            file,
            len: valid,
            buf: Vec::new(),
        })
    }

    /// Bytes on disk.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append the entries of one confirmed page and `fdatasync`: durable before the
    /// checkpoint that moves past the page. A failed write or sync is fatal.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for chunk in entries.chunks(MAX_ENTRIES_PER_RECORD) {
            encode_record(chunk, &mut self.buf);
        }
        let res = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = res {
            // Best effort: cut back to the last whole record so the file stays readable.
            let _ = self.file.set_len(self.len);
            return Err(io_err(
                &self.path,
                "cannot append to the delivery ledger",
                e,
            ));
        }
        self.len = self
            .len
            .saturating_add(u64::try_from(self.buf.len()).unwrap_or(0));
        if self.buf.capacity() > READ_CHUNK {
            // A huge page's buffer is not kept between pages.
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Forget every entry (`reset_persistence_auth` changed: pulling restarts and
    /// sends everything again). A failed truncate or sync is fatal.
    pub fn clear(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_err(&self.path, "cannot clear the delivery ledger", e))?;
        self.len = 0;
        Ok(())
    }

    /// The entries received in `[from, to]`, for one window's dedup decisions.
    pub fn window(&mut self, from: i64, to: i64) -> Result<WindowSet> {
        let mut set = WindowSet::default();
        let path = self.path.clone();
        scan_file(&mut self.file, &path, |e| {
            if e.received >= from && e.received <= to {
                set.insert(e.key, e.status);
            }
        })?;
        Ok(set)
    }

    /// Drop entries received before `before` when that frees at least half the file
    /// (and the file is past [`PRUNE_MIN_BYTES`]). Returns whether it rewrote the file.
    pub fn prune(&mut self, before: i64) -> Result<bool> {
        if self.len < PRUNE_MIN_BYTES {
            return Ok(false);
        }
        let path = self.path.clone();
        let (mut keep, mut total) = (0u64, 0u64);
        scan_file(&mut self.file, &path, |e| {
            total = total.saturating_add(1);
            if e.received >= before {
                keep = keep.saturating_add(1);
            }
        })?;
        if keep.saturating_mul(2) > total {
            return Ok(false);
        }
        let tmp = path.with_extension("ledger.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, "cannot create the compacted ledger", e))?;
        let mut batch: Vec<Entry> = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        let mut written: u64 = 0;
        let mut failure: Option<std::io::Error> = None;
        let mut flush = |batch: &mut Vec<Entry>, bytes: &mut Vec<u8>, written: &mut u64| {
            if batch.is_empty() || failure.is_some() {
                batch.clear();
                return;
            }
            bytes.clear();
            encode_record(batch, bytes);
            batch.clear();
            match out.write_all(bytes) {
                Ok(()) => {
                    *written = written.saturating_add(u64::try_from(bytes.len()).unwrap_or(0))
                }
                Err(e) => failure = Some(e),
            }
        };
        scan_file(&mut self.file, &path, |e| {
            if e.received >= before {
                batch.push(e);
                if batch.len() >= MAX_ENTRIES_PER_RECORD {
                    flush(&mut batch, &mut bytes, &mut written);
                }
            }
        })?;
        flush(&mut batch, &mut bytes, &mut written);
        if let Some(e) = failure {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&tmp, "cannot write the compacted ledger", e));
        }
        out.sync_all()
            .map_err(|e| io_err(&tmp, "cannot sync the compacted ledger", e))?;
        drop(out);
        std::fs::rename(&tmp, &path)
            .map_err(|e| io_err(&path, "cannot replace the ledger by its compacted copy", e))?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = File::open(dir) {
                d.sync_all()
                    .map_err(|e| io_err(dir, "cannot sync the persistence directory", e))?;
            }
        }
        self.file = open_private(&path)?;
        self.len = written;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(received: i64, key: u64, status: &str) -> Entry {
        Entry {
            received,
            key,
            status: status_code(status),
        }
    }

    #[test]
    fn record_round_trips_and_costs_at_most_16_bytes_an_entry() {
        let entries: Vec<Entry> = (0..2000)
            .map(|i| {
                e(
                    1_795_000_000 + i / 3,
                    0xDEAD_BEEF ^ (i as u64) << 7,
                    "Delivered",
                )
            })
            .collect();
        let mut out = Vec::new();
        encode_record(&entries, &mut out);
        assert!(out.len() <= entries.len() * 16, "{} bytes", out.len());
        let mut back = Vec::new();
        assert_eq!(decode_record(&out, |x| back.push(x)), Ok(out.len()));
        assert_eq!(back, entries);
    }

    #[test]
    fn every_cut_and_every_flipped_bit_is_refused_without_entries() {
        let mut out = Vec::new();
        encode_record(&[e(10, 1, "Failed"), e(-5, 2, "Pending")], &mut out);
        for cut in 0..out.len() {
            let mut n = 0;
            assert_eq!(
                decode_record(out.get(..cut).unwrap(), |_| n += 1),
                Err(Torn::Short)
            );
            assert_eq!(n, 0);
        }
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                let mut n = 0;
                let r = decode_record(&bad, |_| n += 1);
                assert!(r.is_err(), "byte {byte} bit {bit}");
                assert_eq!(n, 0);
            }
        }
    }

    #[test]
    fn status_case_does_not_matter_and_statuses_differ() {
        assert_eq!(status_code("FilteredAsSpam"), status_code("filteredAsSpam"));
        let all = [
            "Delivered",
            "Failed",
            "Pending",
            "Expanded",
            "Quarantined",
            "FilteredAsSpam",
            "GettingStatus",
            "None",
            "Resolved",
        ];
        let codes: HashSet<u16> = all.iter().map(|s| status_code(s)).collect();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn window_set_tells_new_status_change_and_delivered() {
        let mut w = WindowSet::default();
        let (p, d) = (status_code("Pending"), status_code("Delivered"));
        assert_eq!(w.check(7, p), Seen::New);
        w.insert(7, p);
        assert_eq!(w.check(7, p), Seen::Delivered);
        assert_eq!(w.check(7, d), Seen::StatusChanged);
        w.insert(7, d);
        assert_eq!(w.check(7, d), Seen::Delivered);
        w.remove(7, d);
        assert_eq!(w.check(7, d), Seen::New);
        // A migrated v1 edge key matches every Status.
        w.insert(9, STATUS_ANY);
        assert_eq!(w.check(9, p), Seen::Delivered);
        assert_eq!(w.check(9, d), Seen::Delivered);
        assert_ne!(status_code(""), STATUS_ANY);
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("msgtrace-ledger-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn append_reopen_window_and_torn_tail() {
        let dir = tmpdir("append");
        let path = ledger_path(&dir, "42");
        let mut l = Ledger::open(&path).unwrap();
        l.append(&[e(100, 1, "Delivered"), e(200, 2, "Delivered")])
            .unwrap();
        l.append(&[e(300, 3, "Failed")]).unwrap();
        let good = l.len();
        drop(l);
        // A torn append: half a record.
        let mut extra = Vec::new();
        encode_record(&[e(400, 4, "Delivered")], &mut extra);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&extra[..extra.len() / 2]).unwrap();
        drop(f);
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(l.len(), good);
        assert_eq!(l.warnings.len(), 1);
        let w = l.window(150, 300).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w.check(2, status_code("Delivered")), Seen::Delivered);
        assert_eq!(w.check(1, status_code("Delivered")), Seen::New);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    }

    #[test]
    fn foreign_first_record_is_refused_and_left_alone() {
        let dir = tmpdir("foreign");
        let path = ledger_path(&dir, "1");
        std::fs::write(&path, b"hello, not a ledger\n").unwrap();
        let err = Ledger::open(&path).unwrap_err().to_string();
        assert!(err.contains("not a msgtrace delivery ledger"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello, not a ledger\n");
    }

    #[test]
    fn symlink_is_refused() {
        let dir = tmpdir("symlink");
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let path = ledger_path(&dir, "1");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(Ledger::open(&path).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn prune_drops_old_entries_only_when_worth_it() {
        let dir = tmpdir("prune");
        let path = ledger_path(&dir, "7");
        let mut l = Ledger::open(&path).unwrap();
        let page: Vec<Entry> = (0..5000u64)
            .map(|i| e(i64::try_from(i).unwrap(), i, "Delivered"))
            .collect();
        for _ in 0..6 {
            l.append(&page).unwrap();
        }
        assert!(l.len() >= PRUNE_MIN_BYTES);
        // Keeping 90 %: not worth a rewrite.
        assert!(!l.prune(500).unwrap());
        assert!(l.prune(4000).unwrap());
        let w = l.window(i64::MIN, i64::MAX).unwrap();
        assert_eq!(w.len(), 1000);
        assert_eq!(w.check(3999, status_code("Delivered")), Seen::New);
        assert_eq!(w.check(4000, status_code("Delivered")), Seen::Delivered);
        drop(l);
        let mut l = Ledger::open(&path).unwrap();
        assert!(l.warnings.is_empty());
        assert_eq!(l.window(0, 10_000).unwrap().len(), 1000);
    }
}
