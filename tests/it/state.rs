//! State file IO: create/lock/recover/compact/reset/takeover, the golden
//! fixtures of every format version, and a full filesystem.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use msgtrace::state::{
    decode_log, encode_record, encode_record_v1, peek, reset, state_path, take_over, Cursor,
    StateFile, TornReason, COMPACT_AT,
};
use msgtrace::Error;

const RWS: &str = "office365_exchange_message_service";
const GRAPH: &str = "office365_exchange_message_graph_service";

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "msgtrace-state-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn cursor(start: i64, keys: usize) -> Cursor {
    Cursor {
        window_start: start,
        window_end: start + 900,
        next_link: Some(format!(
            "https://reports.office365.com/ecp/reportingwebservice/reporting.svc/MessageTrace?$skiptoken={start}"
        )),
        edge_keys: vec![],
        requests: 3,
        sent: 4000,
        filtered: 2,
        reset_auth: Some("2026-01-01".into()),
        delay_secs: 90_000,
        service: RWS.into(),
        settle_start: (start - 86_400).max(0),
        // Version 2 has no edge keys: `keys` pads the record by as many bytes through a
        // settle-pass link (8 a key, as version 1 cost), so sizes stay what tests expect.
        settle_end: if keys == 0 {
            0
        } else {
            (start - 86_400).max(0) + 400
        },
        settle_link: (keys != 0).then(|| "s".repeat(keys * 8)),
        window_len: 3600,
        late_events: 7,
        status_changes: 3,
    }
}

/// Write a state file as msgtrace would (mode 0600), so no mode warning appears.
fn write_state(p: &Path, bytes: &[u8]) {
    fs::write(p, bytes).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap();
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn creates_dir_and_file_0600_and_round_trips() {
    let tmp = TempDir::new("create");
    let dir = tmp.path().join("state/nested");
    let path = state_path(&dir, "12345", RWS);
    assert!(path.ends_with("12345_office365_exchange_message_service.state"));
    let (mut sf, c) = StateFile::open(&path).unwrap();
    assert_eq!(c, None);
    assert!(sf.warnings.is_empty());
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let a = cursor(1_790_000_000, 3);
    let b = cursor(1_790_000_900, 5);
    sf.checkpoint(&a).unwrap();
    sf.checkpoint(&b).unwrap();
    drop(sf);
    let (_sf, c) = StateFile::open(&path).unwrap();
    assert_eq!(c, Some(b.clone()));
    assert_eq!(
        peek(&path).unwrap().map(|(c, n)| (c, n as usize)),
        Some((b.clone(), encode_record(&a).len() + encode_record(&b).len()))
    );
}

#[test]
fn loose_mode_is_tightened_with_a_warning() {
    let tmp = TempDir::new("mode");
    let path = state_path(tmp.path(), "1", RWS);
    fs::write(&path, encode_record(&cursor(1, 0))).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let (sf, c) = StateFile::open(&path).unwrap();
    assert!(c.is_some());
    assert_eq!(mode(&path), 0o600);
    assert!(sf.warnings[0].contains("set to 0600"), "{:?}", sf.warnings);
}

#[test]
fn second_open_is_refused_even_in_this_process() {
    let tmp = TempDir::new("lock");
    let path = state_path(tmp.path(), "7", GRAPH);
    let (mut sf, _) = StateFile::open(&path).unwrap();
    sf.checkpoint(&cursor(10, 1)).unwrap();
    let err = StateFile::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::State(_)), "{err:?}");
    assert!(
        msg.contains("is locked by another msgtrace process"),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    // /proc/locks names the holder: this very process.
    if Path::new("/proc/locks").exists() {
        assert!(
            msg.contains(&format!("pid {}?", std::process::id())),
            "{msg}"
        );
    }
    assert_eq!(err.exit_code(), 3);
    // reset refuses too; peek reads without the lock.
    assert!(reset(&path).is_err());
    assert_eq!(peek(&path).unwrap().unwrap().0, cursor(10, 1));
    drop(sf);
    assert!(StateFile::open(&path).is_ok());
}

#[test]
fn torn_tail_is_cut_with_a_warning() {
    let tmp = TempDir::new("torn");
    let path = state_path(tmp.path(), "9", RWS);
    let a = encode_record(&cursor(100, 2));
    let b = encode_record(&cursor(200, 2));
    let mut bytes = a.clone();
    bytes.extend_from_slice(&b[..b.len() - 3]);
    write_state(&path, &bytes);
    let (mut sf, c) = StateFile::open(&path).unwrap();
    assert_eq!(c, Some(cursor(100, 2)));
    assert_eq!(sf.warnings.len(), 1, "{:?}", sf.warnings);
    let w = &sf.warnings[0];
    assert!(w.contains(&format!("at byte {}", a.len())), "{w}");
    assert!(w.contains("cut short"), "{w}");
    assert_eq!(fs::metadata(&path).unwrap().len() as usize, a.len());
    // Appends continue right after the last valid record.
    sf.checkpoint(&cursor(300, 0)).unwrap();
    drop(sf);
    let (sf, c) = StateFile::open(&path).unwrap();
    assert_eq!(c, Some(cursor(300, 0)));
    assert!(sf.warnings.is_empty());
}

/// A file whose first record is invalid is not ours (issue 14): refused and left as it
/// is, never truncated; a first record merely cut short (a crash during the very first
/// append) is still cut back to an empty file.
#[test]
fn garbage_file_is_refused_and_left_unchanged() {
    let tmp = TempDir::new("garbage");
    let path = state_path(tmp.path(), "9", RWS);
    write_state(&path, b"this is not a state file\n");
    let err = StateFile::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("not a msgtrace state file"), "{msg}");
    assert!(msg.contains("bad magic"), "{msg}");
    assert!(msg.contains("move it away"), "{msg}");
    assert_eq!(fs::read(&path).unwrap(), b"this is not a state file\n");
    // A CRC-valid but out-of-range first record is refused the same way.
    let only_bad = fs::read(fixture("002_v1_out_of_range.state")).unwrap();
    let first_len = encode_record_v1(&out_of_range_v1()[0]).len();
    write_state(&path, &only_bad[first_len..]);
    let msg = StateFile::open(&path).unwrap_err().to_string();
    assert!(msg.contains("value out of range: window start"), "{msg}");
    assert_eq!(fs::read(&path).unwrap(), &only_bad[first_len..]);
    // Cut short: a crash's leftover, cut back to nothing.
    let rec = encode_record(&cursor(1, 1));
    write_state(&path, &rec[..rec.len() - 2]);
    let (mut sf, c) = StateFile::open(&path).unwrap();
    assert_eq!(c, None);
    assert!(sf.warnings[0].contains("cut short"), "{:?}", sf.warnings);
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    sf.checkpoint(&cursor(1, 1)).unwrap();
}

#[test]
fn out_of_range_tail_is_cut_like_a_bad_crc() {
    let tmp = TempDir::new("range");
    let path = state_path(tmp.path(), "9", RWS);
    let bytes = fs::read(fixture("002_v1_out_of_range.state")).unwrap();
    write_state(&path, &bytes);
    let first = out_of_range_v1()[0].clone();
    assert_eq!(peek(&path).unwrap().unwrap().0, first);
    let (sf, c) = StateFile::open(&path).unwrap();
    assert_eq!(c, Some(first.clone()));
    let w = sf.warnings.join("; ");
    assert!(w.contains("value out of range: window start"), "{w}");
    let first_len = encode_record_v1(&first).len();
    assert!(w.contains(&format!("at byte {first_len}")), "{w}");
    drop(sf);
    assert_eq!(fs::metadata(&path).unwrap().len() as usize, first_len);
}

#[test]
fn symlink_fifo_and_foreign_files_are_refused() {
    let tmp = TempDir::new("links");
    let victim = tmp.path().join("victim.txt");
    fs::write(&victim, b"precious\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).unwrap();
    let path = state_path(&dir, "9", RWS);
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let msg = StateFile::open(&path).unwrap_err().to_string();
    assert!(msg.contains("symbolic link"), "{msg}");
    assert!(peek(&path).is_err());
    assert!(reset(&path).is_err());
    assert_eq!(fs::read(&victim).unwrap(), b"precious\n");
    assert_eq!(mode(&victim), 0o644);
    fs::remove_file(&path).unwrap();
    // A FIFO: open must not block (it would wait for a writer forever).
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let t = Instant::now();
    let msg = StateFile::open(&path).unwrap_err().to_string();
    assert!(msg.contains("not a regular file"), "{msg}");
    assert!(peek(&path).is_err());
    assert!(t.elapsed().as_secs() < 5);
    fs::remove_file(&path).unwrap();
    // Owned by another user (only root can make one).
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        write_state(&path, &encode_record(&cursor(5, 0)));
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let msg = StateFile::open(&path).unwrap_err().to_string();
        assert!(msg.contains("owned by uid 65534"), "{msg}");
    } else {
        eprintln!("skipped: foreign owner needs root");
    }
}

#[test]
fn newer_format_is_refused_not_truncated() {
    let tmp = TempDir::new("newer");
    let path = state_path(tmp.path(), "9", RWS);
    let mut rec = encode_record(&cursor(5, 0));
    rec[1] = msgtrace::state::FORMAT_VERSION + 1;
    let crc = msgtrace::state::crc32_update(msgtrace::state::crc32(&rec[..6]), &rec[10..]);
    rec[6..10].copy_from_slice(&crc.to_le_bytes());
    let mut bytes = encode_record(&cursor(4, 0));
    bytes.extend_from_slice(&rec);
    write_state(&path, &bytes);
    let err = StateFile::open(&path).unwrap_err().to_string();
    assert!(err.contains("newer than this msgtrace"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn stale_compaction_temp_is_removed() {
    let tmp = TempDir::new("staletmp");
    let path = state_path(tmp.path(), "9", RWS);
    let mut t = path.as_os_str().to_owned();
    t.push(".tmp");
    fs::write(&t, b"half").unwrap();
    let (sf, _) = StateFile::open(&path).unwrap();
    assert!(!Path::new(&t).exists());
    assert!(sf.warnings[0].contains("interrupted compaction"));
}

#[test]
fn compaction_keeps_last_cursor_shrinks_and_keeps_the_lock() {
    let tmp = TempDir::new("compact");
    let path = state_path(tmp.path(), "42", GRAPH);
    let (mut sf, _) = StateFile::open(&path).unwrap();
    // Enough keys that a few hundred checkpoints cross the bound (fsync is slow on a busy disk).
    const KEYS: usize = 60;
    let one = encode_record(&cursor(0, KEYS)).len() as u64;
    let mut last = cursor(0, KEYS);
    let mut max_seen = 0;
    let mut compactions = 0;
    let mut prev = 0;
    let t0 = Instant::now();
    let n = 3 * COMPACT_AT / one;
    for i in 0..n {
        last = cursor(i as i64 * 900, KEYS);
        sf.checkpoint(&last).unwrap();
        let len = fs::metadata(&path).unwrap().len();
        assert_eq!(len, sf.len());
        if len < prev {
            compactions += 1;
            let alone = encode_record(&last).len() as u64;
            assert_eq!(len, alone, "compacted to the last record alone");
        }
        prev = len;
        max_seen = max_seen.max(len);
    }
    let per = t0.elapsed() / n as u32;
    assert!(compactions >= 2, "{compactions}");
    assert!(max_seen <= COMPACT_AT + 2 * one, "{max_seen}");
    assert_eq!(peek(&path).unwrap().unwrap().0, last);
    // The lock moved to the new inode with the rename.
    assert!(StateFile::open(&path).is_err());
    drop(sf);
    let (_sf, c) = StateFile::open(&path).unwrap();
    assert_eq!(c, Some(last));
    assert_eq!(mode(&path), 0o600);
    eprintln!(
        "state: {one} bytes per checkpoint ({KEYS} keys of padding, {}-byte link); {n} checkpoints, \
         {per:?} each incl. fsync and compaction",
        cursor(0, KEYS).next_link.unwrap().len()
    );
}

#[test]
fn compaction_cost_at_the_bound() {
    let tmp = TempDir::new("compactcost");
    let path = state_path(tmp.path(), "42", RWS);
    let c = cursor(1_790_000_000, 0);
    let rec = encode_record(&c);
    let mut bytes = Vec::new();
    while (bytes.len() as u64) + (rec.len() as u64) <= COMPACT_AT {
        bytes.extend_from_slice(&rec);
    }
    write_state(&path, &bytes);
    let t0 = Instant::now();
    let (mut sf, got) = StateFile::open(&path).unwrap();
    let open_t = t0.elapsed();
    assert_eq!(got, Some(c));
    let t1 = Instant::now();
    sf.compact().unwrap();
    let compact_t = t1.elapsed();
    assert_eq!(fs::metadata(&path).unwrap().len() as usize, rec.len());
    eprintln!(
        "state: open+recover of a {}-byte file ({} records): {open_t:?}; compaction: {compact_t:?}",
        bytes.len(),
        bytes.len() / rec.len()
    );
}

#[test]
fn reset_removes_and_reports() {
    let tmp = TempDir::new("reset");
    let path = state_path(tmp.path(), "1", RWS);
    assert!(!reset(&path).unwrap());
    let (mut sf, _) = StateFile::open(&path).unwrap();
    sf.checkpoint(&cursor(1, 0)).unwrap();
    drop(sf);
    assert!(reset(&path).unwrap());
    assert!(!path.exists());
    assert_eq!(peek(&path).unwrap(), None);
}

#[test]
fn takeover_moves_the_cursor_and_back() {
    let tmp = TempDir::new("takeover");
    let dir = tmp.path();
    // Nothing to take over.
    assert_eq!(take_over(dir, "5", RWS, GRAPH).unwrap(), None);
    let rws = state_path(dir, "5", RWS);
    let (mut sf, _) = StateFile::open(&rws).unwrap();
    let c = cursor(1_790_000_000, 3);
    sf.checkpoint(&c).unwrap();
    // Locked by a running RWS collector: refused.
    assert!(take_over(dir, "5", RWS, GRAPH).is_err());
    drop(sf);
    let got = take_over(dir, "5", RWS, GRAPH).unwrap().unwrap();
    let expected = Cursor {
        service: GRAPH.into(),
        next_link: None,
        window_end: 0,
        settle_link: None,
        settle_end: 0,
        ..c.clone()
    };
    assert_eq!(got, expected);
    assert!(!rws.exists());
    let mut migrated = rws.as_os_str().to_owned();
    migrated.push(".migrated");
    assert!(Path::new(&migrated).exists());
    let graph = state_path(dir, "5", GRAPH);
    let (mut g, gc) = StateFile::open(&graph).unwrap();
    assert_eq!(gc, Some(expected.clone()));
    // Second start: target has a cursor, nothing more taken over.
    drop(g);
    assert_eq!(take_over(dir, "5", RWS, GRAPH).unwrap(), None);
    // Graph moves on; moving back to RWS takes over the newer cursor.
    (g, _) = StateFile::open(&graph).unwrap();
    let later = Cursor {
        window_start: c.window_start + 86_400,
        ..expected
    };
    g.checkpoint(&later).unwrap();
    drop(g);
    let back = take_over(dir, "5", GRAPH, RWS).unwrap().unwrap();
    assert_eq!(back.window_start, later.window_start);
    assert_eq!(back.service, RWS);
}

#[test]
fn takeover_ignores_an_empty_target() {
    // A crash right after the target was created (empty) must not block the takeover.
    let tmp = TempDir::new("takeover-empty");
    let dir = tmp.path();
    let (mut sf, _) = StateFile::open(&state_path(dir, "6", RWS)).unwrap();
    sf.checkpoint(&cursor(77, 0)).unwrap();
    drop(sf);
    fs::write(state_path(dir, "6", GRAPH), b"").unwrap();
    let got = take_over(dir, "6", RWS, GRAPH).unwrap().unwrap();
    assert_eq!(got.window_start, 77);
}

/// The golden cursors stored in `tests/fixtures/state/001_v1.state`, as this build
/// decodes them (version 1 migrated: the settle pass starts at the window start, the
/// fields of version 2 are zero).
fn golden_v1() -> Vec<Cursor> {
    vec![
        Cursor {
            window_start: 1_795_000_000,
            window_end: 0,
            next_link: None,
            edge_keys: vec![],
            requests: 1,
            sent: 0,
            filtered: 0,
            reset_auth: None,
            delay_secs: 90_000,
            service: RWS.into(),
            settle_start: 1_795_000_000,
            ..Cursor::default()
        },
        Cursor {
            window_start: 1_795_000_000,
            window_end: 1_795_000_900,
            next_link: Some(
                "https://reports.office365.com/ecp/reportingwebservice/reporting.svc/MessageTrace?$filter=StartDate%20eq%20datetime'2026-11-18T10:13:20'&$skiptoken=1999".into(),
            ),
            edge_keys: vec![0x0123_4567_89ab_cdef, u64::MAX, 0],
            requests: 17,
            sent: 123_456,
            filtered: 9,
            reset_auth: Some("2026-01-01".into()),
            delay_secs: 90_000,
            service: "custom_service_é".into(),
            settle_start: 1_795_000_000,
            ..Cursor::default()
        },
        Cursor {
            window_start: -1,
            window_end: i64::MAX,
            next_link: Some(String::new()),
            edge_keys: vec![42],
            requests: u64::MAX,
            sent: 1 << 40,
            filtered: 127,
            reset_auth: Some(String::new()),
            delay_secs: 1,
            service: GRAPH.into(),
            settle_start: -1,
            ..Cursor::default()
        },
    ]
}

/// The golden cursors stored in `tests/fixtures/state/002_v2.state`.
fn golden_v2() -> Vec<Cursor> {
    vec![
        Cursor {
            window_start: 1_795_000_000,
            settle_start: 1_795_000_000 - 89_100,
            delay_secs: 90_000,
            service: GRAPH.into(),
            ..Cursor::default()
        },
        Cursor {
            window_start: 1_795_000_000,
            window_end: 1_795_000_060,
            next_link: Some("https://graph.microsoft.com/v1.0/admin/exchange/tracing/messageTraces?$skiptoken=abc".into()),
            requests: 17,
            sent: 123_456,
            filtered: 9,
            reset_auth: Some("2026-01-01".into()),
            delay_secs: 90_000,
            service: "custom_service_é".into(),
            settle_start: 1_794_910_000,
            window_len: 4320,
            late_events: 12,
            status_changes: 5,
            ..Cursor::default()
        },
        Cursor {
            window_start: -1,
            window_end: 0,
            requests: u64::MAX,
            sent: 1 << 40,
            filtered: 127,
            reset_auth: Some(String::new()),
            delay_secs: 1,
            service: RWS.into(),
            settle_start: i64::MIN,
            settle_end: i64::MAX,
            settle_link: Some(String::new()),
            window_len: u64::MAX,
            late_events: u64::MAX,
            status_changes: 1,
            ..Cursor::default()
        },
    ]
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/state")
        .join(name)
}

/// `tests/fixtures/state/002_v1_out_of_range.state`: a plausible checkpoint, then a
/// CRC-valid record whose `window_start` is `i64::MIN` (panicked in debug builds,
/// queried the year −292 billion in release).
fn out_of_range_v1() -> Vec<Cursor> {
    let first = Cursor {
        window_start: 1_795_000_000,
        window_end: 0,
        next_link: None,
        edge_keys: vec![7],
        requests: 4,
        sent: 10,
        filtered: 1,
        reset_auth: None,
        delay_secs: 90_000,
        service: RWS.into(),
        settle_start: 1_795_000_000,
        ..Cursor::default()
    };
    vec![
        first.clone(),
        Cursor {
            window_start: i64::MIN,
            settle_start: i64::MIN,
            ..first
        },
    ]
}

/// Regenerate with `MSGTRACE_BLESS=1 cargo test --test it state::golden` — only
/// when adding a NEW version's fixture; old fixtures must never change.
#[test]
fn golden_fixtures_keep_loading() {
    let v1 = fixture("001_v1.state");
    let v2 = fixture("003_v2.state");
    if crate::harness::bless() && !v2.exists() {
        let bytes: Vec<u8> = golden_v2().iter().flat_map(encode_record).collect();
        fs::write(&v2, bytes).unwrap();
        let last = golden_v2().pop().unwrap();
        fs::write(fixture("003_v2.state.expected"), format!("{last:#?}\n")).unwrap();
    }
    let v1_range = fixture("002_v1_out_of_range.state");
    if std::env::var_os("MSGTRACE_BLESS").is_some() && !v1_range.exists() {
        let bytes: Vec<u8> = out_of_range_v1()
            .iter()
            .flat_map(encode_record_v1)
            .collect();
        fs::write(&v1_range, bytes).unwrap();
        let last = out_of_range_v1().pop().unwrap();
        fs::write(
            fixture("002_v1_out_of_range.state.expected"),
            format!("{last:#?}\n"),
        )
        .unwrap();
    }
    let mut checked = 0;
    for entry in fs::read_dir(fixture("")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "state") {
            let rec = decode_log(&fs::read(&p).unwrap());
            assert_eq!(rec.torn, None, "{}", p.display());
            let mut exp = p.as_os_str().to_owned();
            exp.push(".expected");
            let expected = fs::read_to_string(&exp).unwrap();
            // A later format adds fields: every line an older build printed is still
            // printed (same field, same value); the new ones are checked below.
            let got = format!("{:#?}\n", rec.cursor.unwrap());
            for line in expected.lines() {
                assert!(
                    got.lines().any(|l| l == line),
                    "{}: `{line}` missing from\n{got}",
                    p.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 3);
    // Version 1 loads migrated: both passes at its cursor, its edge keys kept for the
    // ledger, its window resumed by the first pass.
    let rec = decode_log(&fs::read(&v1).unwrap());
    assert_eq!(rec.cursor, golden_v1().pop());
    assert_eq!(rec.records, 3);
    // The encoders still write both versions byte for byte.
    let bytes: Vec<u8> = golden_v1().iter().flat_map(encode_record_v1).collect();
    assert_eq!(fs::read(&v1).unwrap(), bytes);
    let bytes: Vec<u8> = golden_v2().iter().flat_map(encode_record).collect();
    assert_eq!(fs::read(&v2).unwrap(), bytes);
    assert_eq!(decode_log(&bytes).cursor, golden_v2().pop());
}

#[test]
fn every_prefix_of_every_fixture_recovers() {
    for entry in fs::read_dir(fixture("")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "state") {
            let bytes = fs::read(&p).unwrap();
            for cut in 0..=bytes.len() {
                let rec = decode_log(&bytes[..cut]);
                assert!(rec.valid_len <= cut);
                if let Some(t) = rec.torn {
                    assert_eq!(t.offset, rec.valid_len);
                    assert!(matches!(
                        t.reason,
                        TornReason::ShortHeader | TornReason::ShortPayload { .. }
                    ));
                }
            }
        }
    }
}

/// A real full filesystem: a 16 KiB tmpfs mounted in a private mount namespace
/// of this test's thread only (needs CAP_SYS_ADMIN; skipped with a note otherwise, a
/// failure under MSGTRACE_STRICT=1).
#[test]
fn full_filesystem_is_a_fatal_state_error() {
    let tmp = TempDir::new("full");
    let mnt = tmp.path().to_path_buf();
    let res = std::thread::spawn(move || -> Result<(Error, u64), String> {
        use std::ffi::CString;
        // SAFETY: plain syscalls with valid NUL-terminated strings; the new mount
        // namespace belongs to this thread alone and dies with it.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(format!("unshare: {}", std::io::Error::last_os_error()));
            }
            let root = CString::new("/").unwrap();
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(format!(
                    "make-rprivate: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let src = CString::new("tmpfs").unwrap();
            let target = CString::new(mnt.to_str().unwrap()).unwrap();
            let opts = CString::new("size=16k,mode=0700").unwrap();
            if libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                opts.as_ptr().cast(),
            ) != 0
            {
                return Err(format!("mount tmpfs: {}", std::io::Error::last_os_error()));
            }
        }
        let path = state_path(&mnt, "1", RWS);
        let (mut sf, _) = StateFile::open(&path).map_err(|e| e.to_string())?;
        let mut c = cursor(0, 500); // ~4 KB a record
        for i in 0..100 {
            c.window_start = i;
            if let Err(e) = sf.checkpoint(&c) {
                let len = sf.len();
                drop(sf);
                // The last good checkpoint is still readable after the failure.
                let got = msgtrace::state::peek(&path).map_err(|e| e.to_string())?;
                assert_eq!(got.map(|(c, _)| c.window_start), Some(i - 1));
                return Ok((e, len));
            }
        }
        Err("tmpfs never filled up".into())
    })
    .join()
    .unwrap();
    match res {
        Ok((err, len)) => {
            assert!(matches!(err, Error::State(_)), "{err:?}");
            assert_eq!(err.exit_code(), 3);
            let msg = err.to_string();
            assert!(
                msg.contains("cannot write checkpoint") || msg.contains("fsync"),
                "{msg}"
            );
            assert!(len > 0);
            eprintln!("state: full tmpfs after {len} bytes: {msg}");
        }
        Err(why)
            if why.starts_with("unshare")
                || why.starts_with("make-rprivate")
                || why.starts_with("mount") =>
        {
            crate::harness::missing(&format!(
                "cannot mount a tmpfs in a private mount namespace (needs CAP_SYS_ADMIN): {why}"
            ));
        }
        Err(why) => panic!("{why}"),
    }
}

#[test]
fn oversized_cursor_is_refused_and_the_file_stays_valid() {
    let tmp = TempDir::new("bounds");
    let path = state_path(tmp.path(), "3", RWS);
    let (mut sf, _) = StateFile::open(&path).unwrap();
    sf.checkpoint(&cursor(1, 1)).unwrap();
    let big = Cursor {
        settle_link: Some("x".repeat(msgtrace::state::MAX_LINK_LEN + 1)),
        ..cursor(2, 0)
    };
    let err = sf.checkpoint(&big).unwrap_err();
    assert!(matches!(err, Error::State(_)), "{err:?}");
    assert!(err.to_string().contains("next link longer"), "{err}");
    // Edge keys are no longer written (version 2): 100,001 of them cannot fail a checkpoint.
    let keys = Cursor {
        edge_keys: vec![1; msgtrace::state::MAX_EDGE_KEYS + 1],
        ..cursor(1, 1)
    };
    assert!(msgtrace::state::check_bounds(&keys).is_none());
    drop(sf);
    let (sf, c) = StateFile::open(&path).unwrap();
    assert_eq!(c, Some(cursor(1, 1)));
    assert!(sf.warnings.is_empty());
}

#[test]
fn state_show_words() {
    let c = Cursor {
        window_start: 1_795_000_000,
        window_end: 0,
        next_link: None,
        edge_keys: vec![1, 2],
        requests: 10,
        sent: 20,
        filtered: 1,
        reset_auth: None,
        delay_secs: 90_000,
        service: GRAPH.into(),
        settle_start: 1_795_000_000 - 3600,
        settle_end: 1_795_000_000 - 2700,
        settle_link: Some("l".into()),
        window_len: 0,
        late_events: 4,
        status_changes: 2,
    };
    let text = msgtrace::state::describe(&c, 1_795_000_000 + 90_000 + 3600);
    assert_eq!(
        text,
        "service: office365_exchange_message_graph_service\n\
         window: next one starts at 2026-11-18T11:06:40Z\n\
         settle pass: 2026-11-18T10:06:40Z .. 2026-11-18T10:21:40Z being pulled, paged part-way (resumes at the saved next page)\n\
         lag: 1d 2h behind now; settle pass 2h 0m behind the target (now - 1d 1h delay)\n\
         counters: 10 request(s) made, 20 event(s) sent, 1 event(s) filtered, 4 late event(s), 2 status change(s)\n\
         reset_persistence_auth: (none)\n"
    );
}

/// Another process holding the lock (util-linux `flock`, as a stand-in for a
/// second collector) is refused and named; skipped when `flock` is missing.
#[test]
fn lock_held_by_another_process_is_refused() {
    let tmp = TempDir::new("lock-proc");
    let path = state_path(tmp.path(), "8", RWS);
    drop(StateFile::open(&path).unwrap());
    let child = std::process::Command::new("flock")
        // -w, not -n: the probe below holds the lock for an instant on every try, and a
        // non-blocking child that hit such an instant would give up (flaky under load).
        // -o: the lock stays with flock itself, not its sleep.
        .args(["-w", "4", "-o"])
        .arg(&path)
        .args(["sleep", "5"])
        .spawn();
    let Ok(mut child) = child else {
        crate::skip!("util-linux flock is not installed (apt-get install util-linux)");
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(4);
    let mut refused = None;
    while Instant::now() < deadline {
        match StateFile::open(&path) {
            Ok(sf) => drop(sf), // the child has not taken it yet
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let msg = refused.expect("the child never took the lock");
    assert!(
        msg.contains("is locked by another msgtrace process (pid "),
        "{msg}"
    );
    if Path::new("/proc/locks").exists() {
        assert!(msg.contains(&format!("pid {}?", child.id())), "{msg}");
    }
    // Released with the process: open works again.
    assert!(StateFile::open(&path).is_ok());
}
