//! `bench_state`: the state file's cost, for `make bench`. In a temp directory under
//! `DIR` it writes checkpoints through `msgtrace::state::StateFile` as the puller does
//! (between windows: a few edge keys; mid-window: a `$skiptoken` next link) until
//! several compactions happened, and times an explicit `compact`. Then it appends
//! pages of delivery-ledger entries (`msgtrace::ledger::Ledger`) as confirmed pages do
//! and measures the ledger's bytes on disk per record. Prints two lines:
//! `state between_bytes B1 midwindow_bytes B2 checkpoints N secs_per_checkpoint S
//! compactions C compact_secs T file_bytes F` and
//! `ledger records R pages P bytes_per_record X secs_per_page S`.
//!
//! ```text
//! bench_state DIR [--checkpoints N]
//! ```
//!
//! Must not: write outside `DIR/msgtrace-bench-state-PID` (removed at the end).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::process::ExitCode;
use std::time::Instant;

use msgtrace::state::{encode_record, state_path, Cursor, StateFile};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: bench_state DIR [--checkpoints N]");
        return ExitCode::from(1);
    };
    let mut n = 3000u64;
    if args.next().as_deref() == Some("--checkpoints") {
        n = args.next().and_then(|v| v.parse().ok()).unwrap_or(n);
    }
    let dir =
        std::path::Path::new(&dir).join(format!("msgtrace-bench-state-{}", std::process::id()));
    let path = state_path(&dir, "bench", "office365_exchange_message_service");
    let res = bench(&path, n).and_then(|state| Ok(format!("{state}\n{}", ledger(&dir)?)));
    let _ = std::fs::remove_dir_all(&dir);
    match res {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_state: {e}");
            ExitCode::from(1)
        }
    }
}

fn cursor(i: u64) -> Cursor {
    let start = 1_764_000_000 + (i as i64) * 900;
    Cursor {
        window_start: start,
        window_end: 0,
        next_link: None,
        // Version 2: no edge keys (the delivery ledger holds what was sent).
        edge_keys: vec![],
        requests: 3 * i,
        sent: 1500 * i,
        filtered: i,
        reset_auth: Some("2026-01-01".into()),
        delay_secs: 90_000,
        service: "office365_exchange_message_service".into(),
        // The settle pass a day behind, with its counters.
        settle_start: start - 89_100,
        settle_end: 0,
        settle_link: None,
        window_len: 0,
        late_events: i / 10,
        status_changes: i / 20,
    }
}

fn mid_window(i: u64) -> Cursor {
    let mut c = cursor(i);
    c.window_end = c.window_start + 900;
    c.edge_keys.clear();
    c.next_link = Some(format!(
        "https://reports.office365.com/ecp/reportingwebservice/reporting.svc/MessageTrace?$filter=StartDate%20eq%20datetime'2026-11-24T10:00:00Z'%20and%20EndDate%20eq%20datetime'2026-11-24T10:15:00Z'&$skiptoken={}",
        2000 * (i % 7 + 1)
    ));
    c
}

fn bench(path: &std::path::Path, n: u64) -> msgtrace::Result<String> {
    let between = encode_record(&cursor(1)).len();
    let mid = encode_record(&mid_window(1)).len();
    let (mut sf, _) = StateFile::open(path)?;
    let mut compactions = 0u64;
    let t = Instant::now();
    for i in 0..n {
        let before = sf.len();
        // Pages and windows alternate as in a backfill: two pages then the window's end.
        let c = if i % 3 == 2 { cursor(i) } else { mid_window(i) };
        sf.checkpoint(&c)?;
        if sf.len() < before {
            compactions += 1;
        }
    }
    let per = t.elapsed().as_secs_f64() / n as f64;
    // One explicit compaction of a grown file, timed alone.
    for i in 0..100 {
        sf.checkpoint(&mid_window(n + i))?;
    }
    let t = Instant::now();
    sf.compact()?;
    let compact = t.elapsed().as_secs_f64();
    Ok(format!(
        "state between_bytes {between} midwindow_bytes {mid} checkpoints {n} secs_per_checkpoint {per:.6} compactions {compactions} compact_secs {compact:.6} file_bytes {}",
        sf.len()
    ))
}

/// Pages of `PAGE` records (Graph's largest page), received over one day, with
/// realistic keys and statuses, appended and fsynced one page at a time.
fn ledger(dir: &std::path::Path) -> msgtrace::Result<String> {
    use msgtrace::ledger::{ledger_path, status_code, Entry, Ledger};
    const PAGE: u64 = 5000;
    const PAGES: u64 = 40;
    let mut l = Ledger::open(&ledger_path(dir, "bench"))?;
    let statuses = [
        "Delivered",
        "FilteredAsSpam",
        "Failed",
        "Pending",
        "Quarantined",
    ];
    let t = Instant::now();
    let mut page = Vec::with_capacity(PAGE as usize);
    for p in 0..PAGES {
        page.clear();
        for i in 0..PAGE {
            let n = p * PAGE + i;
            page.push(Entry {
                // Newest first within a page, about 17 records a second over a day.
                received: 1_764_000_000 + ((PAGES * PAGE - n) * 86_400 / (PAGES * PAGE)) as i64,
                key: msgtrace::record::record_key(
                    &format!("{n:032x}"),
                    &format!("user{}@contoso.com", n % 5),
                ),
                status: status_code(statuses[(n % 5) as usize]),
            });
        }
        l.append(&page)?;
    }
    let per_page = t.elapsed().as_secs_f64() / PAGES as f64;
    let records = PAGES * PAGE;
    Ok(format!(
        "ledger records {records} pages {PAGES} bytes_per_record {:.2} secs_per_page {per_page:.6}",
        l.len() as f64 / records as f64
    ))
}
