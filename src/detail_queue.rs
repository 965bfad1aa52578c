//! The durable, bounded queue of rows awaiting trace details (SPEC §3 "Trace details"):
//! one file per input, `<dir>/<input_id>_details.queue`, CRC-framed like the state file.
//!
//! Owns: the queue file format, its recovery (a torn tail is cut off), append on
//! enqueue, the "done up to" record, compaction when mostly done, the bound (the oldest
//! entries are dropped and counted), and the (trace id, recipient) keys already queued
//! so a row delivered twice (a page pulled again after a restart) is asked for once.
//! Must not: make requests, log, or read the clock — `details` drives it.
//!
//! # File format (version 1)
//!
//! A sequence of records, each a 10-byte header then the payload: magic `0xD7`, version
//! `1`, payload length (u32 LE, at most [`MAX_RECORD_LEN`]), CRC-32 (`state::crc32`)
//! over header bytes 0..6 and the payload (u32 LE). Payloads:
//! - `1` entry: seq (u64 LE), trace id and recipient (each u16 LE length + UTF-8);
//! - `2` head: u64 LE — every entry with a smaller seq is done (or dropped).
//!
//! The first invalid record ends the file (it is cut off: only a crash leaves one).

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::state::{crc32, open_private, read_bounded, Access};

pub const MAGIC: u8 = 0xD7;
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 10;
/// Longest payload: two texts of at most `MAX_TEXT` bytes and their framing.
pub const MAX_RECORD_LEN: usize = 2 * MAX_TEXT + 16;
/// Longest trace id or recipient kept (longer ones are not valid addresses or ids).
pub const MAX_TEXT: usize = 1024;
/// Largest queue file read back (1,000,000 entries of long addresses).
pub const MAX_FILE_LEN: u64 = 1 << 31;
/// Compaction happens when the file holds this many done records more than pending ones.
pub const COMPACT_DONE: u64 = 1024;

const ENTRY: u8 = 1;
const HEAD: u8 = 2;

/// One row awaiting details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub trace_id: String,
    pub recipient: String,
}

/// The queue of one input, open on its file.
#[derive(Debug)]
pub struct DetailQueue {
    path: PathBuf,
    file: File,
    pending: VecDeque<Entry>,
    /// Keys of the rows in the file (pending and done since the last compaction).
    keys: HashSet<u64>,
    next_seq: u64,
    cap: usize,
    /// Records in the file that are done or dropped (compaction frees them).
    dead: u64,
    /// Entries dropped because the queue was full, since this process started.
    pub dropped: u64,
}

/// The path of an input's detail queue.
pub fn queue_path(dir: &Path, input_id: &str) -> PathBuf {
    dir.join(format!("{input_id}_details.queue"))
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::State(format!(
        "detail queue {}: {what}: {e} — check the persistence directory",
        path.display()
    ))
}

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let start = out.len();
    out.push(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&len.to_le_bytes());
    let mut crc_in = out.get(start..).map(<[u8]>::to_vec).unwrap_or_default();
    crc_in.extend_from_slice(payload);
    out.extend_from_slice(&crc32(&crc_in).to_le_bytes());
    out.extend_from_slice(payload);
}

fn put_text(s: &str, p: &mut Vec<u8>) {
    let b = s.as_bytes();
    let b = b.get(..b.len().min(MAX_TEXT)).unwrap_or(b);
    let n = u16::try_from(b.len()).unwrap_or(0);
    p.extend_from_slice(&n.to_le_bytes());
    p.extend_from_slice(b.get(..usize::from(n)).unwrap_or_default());
}

fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    let mut p = vec![ENTRY];
    p.extend_from_slice(&e.seq.to_le_bytes());
    put_text(&e.trace_id, &mut p);
    put_text(&e.recipient, &mut p);
    frame(&p, out);
}

fn encode_head(head: u64, out: &mut Vec<u8>) {
    let mut p = vec![HEAD];
    p.extend_from_slice(&head.to_le_bytes());
    frame(&p, out);
}

/// A decoded record.
#[derive(Debug, PartialEq, Eq)]
enum Rec {
    Entry(Entry),
    Head(u64),
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

fn text_at(b: &[u8], at: &mut usize) -> Option<String> {
    let l: [u8; 2] = b.get(*at..at.checked_add(2)?)?.try_into().ok()?;
    let n = usize::from(u16::from_le_bytes(l));
    let from = at.checked_add(2)?;
    let to = from.checked_add(n)?;
    let s = std::str::from_utf8(b.get(from..to)?).ok()?.to_string();
    *at = to;
    Some(s)
}

fn decode_payload(p: &[u8]) -> Option<Rec> {
    match *p.first()? {
        ENTRY => {
            let seq = u64_at(p, 1)?;
            let mut at = 9;
            let trace_id = text_at(p, &mut at)?;
            let recipient = text_at(p, &mut at)?;
            (at == p.len()).then_some(Rec::Entry(Entry {
                seq,
                trace_id,
                recipient,
            }))
        }
        HEAD => (p.len() == 9).then(|| u64_at(p, 1).map(Rec::Head))?,
        _ => None,
    }
}

/// The valid records of `bytes` and the length of the valid prefix.
fn decode(bytes: &[u8]) -> (Vec<Rec>, usize) {
    let mut recs = Vec::new();
    let mut pos = 0usize;
    while let Some(h) = pos
        .checked_add(HEADER_LEN)
        .and_then(|end| bytes.get(pos..end))
    {
        let (Some(&MAGIC), Some(&VERSION)) = (h.first(), h.get(1)) else {
            break;
        };
        let len = h
            .get(2..6)
            .and_then(|l| <[u8; 4]>::try_from(l).ok())
            .map_or(usize::MAX, |l| {
                usize::try_from(u32::from_le_bytes(l)).unwrap_or(usize::MAX)
            });
        if len > MAX_RECORD_LEN {
            break;
        }
        let crc = h
            .get(6..10)
            .and_then(|l| <[u8; 4]>::try_from(l).ok())
            .map(u32::from_le_bytes);
        let start = pos.saturating_add(HEADER_LEN);
        let Some(payload) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
            break;
        };
        let mut crc_in = h.get(..6).map(<[u8]>::to_vec).unwrap_or_default();
        crc_in.extend_from_slice(payload);
        if crc != Some(crc32(&crc_in)) {
            break;
        }
        let Some(rec) = decode_payload(payload) else {
            break;
        };
        recs.push(rec);
        pos = start.saturating_add(len);
    }
    (recs, pos)
}

impl DetailQueue {
    /// Open (creating, mode 0600) the queue at `path`, bounded by `cap` entries; a torn
    /// tail is cut off.
    pub fn open(path: &Path, cap: u32) -> Result<DetailQueue> {
        let mut file =
            open_private(path, Access::AppendCreate).map_err(|e| io_err(path, "cannot open", e))?;
        let bytes =
            read_bounded(&mut file, MAX_FILE_LEN).map_err(|e| io_err(path, "cannot read", e))?;
        let (recs, valid) = decode(&bytes);
        if valid < bytes.len() {
            file.set_len(u64::try_from(valid).unwrap_or(0))
                .map_err(|e| io_err(path, "cannot cut its torn tail", e))?;
        }
        let mut q = DetailQueue {
            path: path.to_path_buf(),
            file,
            pending: VecDeque::new(),
            keys: HashSet::new(),
            next_seq: 0,
            cap: usize::try_from(cap).unwrap_or(usize::MAX).max(1),
            dead: 0,
            dropped: 0,
        };
        let mut head = 0u64;
        for r in recs {
            match r {
                Rec::Entry(e) => {
                    q.keys
                        .insert(crate::record::record_key(&e.trace_id, &e.recipient));
                    q.next_seq = q.next_seq.max(e.seq.saturating_add(1));
                    q.pending.push_back(e);
                }
                Rec::Head(h) => head = head.max(h),
            }
        }
        let before = q.pending.len();
        q.pending.retain(|e| e.seq >= head);
        q.dead = u64::try_from(before.saturating_sub(q.pending.len())).unwrap_or(0);
        q.next_seq = q.next_seq.max(head);
        Ok(q)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The oldest pending row.
    pub fn front(&self) -> Option<&Entry> {
        self.pending.front()
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_err(&self.path, "cannot write", e))
    }

    /// Queue rows `(trace id, recipient)` (one write and sync for all). Rows already in
    /// the file are skipped; beyond the bound the oldest are dropped. Returns how many
    /// were dropped by this call.
    pub fn enqueue(&mut self, rows: &[(String, String)]) -> Result<u64> {
        let mut out = Vec::new();
        let mut dropped = 0u64;
        for (trace_id, recipient) in rows {
            if !self
                .keys
                .insert(crate::record::record_key(trace_id, recipient))
            {
                continue;
            }
            let e = Entry {
                seq: self.next_seq,
                trace_id: trace_id.clone(),
                recipient: recipient.clone(),
            };
            self.next_seq = self.next_seq.saturating_add(1);
            encode_entry(&e, &mut out);
            self.pending.push_back(e);
            while self.pending.len() > self.cap {
                self.pending.pop_front();
                dropped = dropped.saturating_add(1);
                self.dead = self.dead.saturating_add(1);
            }
        }
        if out.is_empty() {
            return Ok(0);
        }
        if dropped > 0 {
            let head = self.pending.front().map_or(self.next_seq, |e| e.seq);
            encode_head(head, &mut out);
            self.dropped = self.dropped.saturating_add(dropped);
        }
        self.append(&out)?;
        self.maybe_compact()?;
        Ok(dropped)
    }

    /// The oldest pending row is done: its "done up to" record is written and synced.
    pub fn done_front(&mut self) -> Result<()> {
        let Some(e) = self.pending.pop_front() else {
            return Ok(());
        };
        let mut out = Vec::new();
        encode_head(e.seq.saturating_add(1), &mut out);
        self.dead = self.dead.saturating_add(1);
        self.append(&out)?;
        self.maybe_compact()
    }

    /// Rewrite the file with the pending entries only, when mostly done: written to a
    /// new file, synced, renamed over the old one.
    fn maybe_compact(&mut self) -> Result<()> {
        let live = u64::try_from(self.pending.len()).unwrap_or(u64::MAX);
        if self.dead < COMPACT_DONE.max(live) {
            return Ok(());
        }
        let tmp = self.path.with_extension("queue.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut out = Vec::new();
        self.keys.clear();
        for e in &self.pending {
            encode_entry(e, &mut out);
            self.keys
                .insert(crate::record::record_key(&e.trace_id, &e.recipient));
        }
        encode_head(
            self.pending.front().map_or(self.next_seq, |e| e.seq),
            &mut out,
        );
        let mut f = open_private(&tmp, Access::AppendCreate)
            .map_err(|e| io_err(&tmp, "cannot create", e))?;
        f.write_all(&out)
            .and_then(|()| f.sync_all())
            .map_err(|e| io_err(&tmp, "cannot write", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io_err(&self.path, "cannot replace", e))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.file = f;
        self.dead = 0;
        Ok(())
    }
}

/// Pending entries in the queue file at `path` without opening it for writing (`state
/// show`); `None` when there is no file.
pub fn peek_len(path: &Path) -> Result<Option<usize>> {
    let mut file = match open_private(path, Access::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, "cannot open", e)),
    };
    let bytes =
        read_bounded(&mut file, MAX_FILE_LEN).map_err(|e| io_err(path, "cannot read", e))?;
    let (recs, _) = decode(&bytes);
    let head = recs
        .iter()
        .filter_map(|r| match r {
            Rec::Head(h) => Some(*h),
            Rec::Entry(_) => None,
        })
        .max()
        .unwrap_or(0);
    Ok(Some(
        recs.iter()
            .filter(|r| matches!(r, Rec::Entry(e) if e.seq >= head))
            .count(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, from: usize) -> Vec<(String, String)> {
        (from..from + n)
            .map(|i| (format!("id-{i}"), format!("o'brien{i}@exämple.com")))
            .collect()
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("msgtrace-dq-{}-{name}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        let p = d.join("x_details.queue");
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn survives_reopen_and_skips_rows_already_queued() {
        let p = tmp("reopen");
        let mut q = DetailQueue::open(&p, 100).unwrap();
        assert_eq!(q.enqueue(&rows(5, 0)).unwrap(), 0);
        q.done_front().unwrap();
        q.done_front().unwrap();
        drop(q);
        let mut q = DetailQueue::open(&p, 100).unwrap();
        assert_eq!(q.len(), 3);
        assert_eq!(q.front().unwrap().trace_id, "id-2");
        assert_eq!(q.front().unwrap().recipient, "o'brien2@exämple.com");
        q.enqueue(&rows(6, 0)).unwrap();
        assert_eq!(q.len(), 4, "only id-5 is new");
        assert_eq!(peek_len(&p).unwrap(), Some(4));
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_full_queue_drops_the_oldest() {
        let p = tmp("torn");
        let mut q = DetailQueue::open(&p, 100).unwrap();
        q.enqueue(&rows(3, 0)).unwrap();
        drop(q);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[MAGIC, VERSION, 40, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let mut q = DetailQueue::open(&p, 100).unwrap();
        assert_eq!(q.len(), 3);
        assert_eq!(q.enqueue(&rows(100, 3)).unwrap(), 3);
        assert_eq!(q.dropped, 3);
        assert_eq!(q.front().unwrap().trace_id, "id-3");
        drop(q);
        let q = DetailQueue::open(&p, 100).unwrap();
        assert_eq!(
            (q.len(), q.front().unwrap().trace_id.as_str()),
            (100, "id-3")
        );
    }

    #[test]
    fn compaction_keeps_the_pending_rows() {
        let p = tmp("compact");
        let mut q = DetailQueue::open(&p, 10_000).unwrap();
        q.enqueue(&rows(3000, 0)).unwrap();
        for _ in 0..2500 {
            q.done_front().unwrap();
        }
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size < 3000 * 40, "compacted: {size}");
        drop(q);
        let q = DetailQueue::open(&p, 10_000).unwrap();
        assert_eq!(q.len(), 500);
        assert_eq!(q.front().unwrap().trace_id, "id-2500");
    }
}
