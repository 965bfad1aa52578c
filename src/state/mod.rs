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
//! The format and its codec are documented in `codec.rs`.
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
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

mod codec;
pub use codec::*;

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
    #[cfg(test)]
    fn open_at(path: &Path, file: File) -> StateFile {
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

    #[test]
    fn write_failure_is_a_fatal_state_error_dev_full() {
        let Ok(full) = OpenOptions::new().append(true).open("/dev/full") else {
            // Every Linux has /dev/full; elsewhere there is nothing to prove here.
            return;
        };
        let mut sf = StateFile::open_at(Path::new("/dev/full"), full);
        let c = Cursor {
            window_start: 1_795_000_000,
            delay_secs: 1,
            ..Cursor::default()
        };
        let err = sf.checkpoint(&c).unwrap_err();
        assert!(matches!(err, Error::State(_)), "{err:?}");
        assert_eq!(err.exit_code(), 3);
        assert!(err.to_string().contains("cannot write checkpoint"), "{err}");
    }

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
