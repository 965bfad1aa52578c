//! `bench_scan`: the scanner and the encoder alone, for `make bench`. Reads one page
//! (a file fetched from the emulator: an Atom feed, or a Graph JSON page when its first
//! byte is `{`) into memory, then times `msgtrace::source::reporting::scan_page` (or
//! `graph::scan_page`) over it and `msgtrace::event::encode` over its records, each
//! `--iters` times, and prints one line per stage:
//! `scan records R iters I secs S rate RPS bytes B` / `encode records R iters I secs S
//! rate RPS bytes B` (bytes = page bytes scanned / JSON bytes written per iteration).
//!
//! ```text
//! bench_scan PAGE.xml|PAGE.json [--iters N] [--mode scan|encode|both]
//! ```
//!
//! `--mode` lets callgrind count one stage at a time (run twice with different
//! `--iters`; the difference divided by the extra records is instructions per record).
//! Must not: do network IO.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::borrow::Cow;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

/// CPU seconds used by this thread so far.
fn cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

use msgtrace::error::Result;
use msgtrace::record::{Record, Value};
use msgtrace::source::{graph, reporting, PageCtx};

/// The scanner for the page's format: Graph JSON when it opens with `{`, else Atom.
fn scan_page(
    page: &[u8],
    ctx: &PageCtx<'_>,
    on_record: &mut dyn FnMut(&Record<'_>) -> Result<()>,
) -> Result<msgtrace::source::PageEnd> {
    if page.trim_ascii_start().first() == Some(&b'{') {
        graph::scan_page(page, ctx, on_record)
    } else {
        reporting::scan_page(page, ctx, on_record)
    }
}

fn owned(v: &Value<'_>) -> Value<'static> {
    match v {
        Value::Null => Value::Null,
        Value::Bool(b) => Value::Bool(*b),
        Value::Text(t) => Value::Text(Cow::Owned(t.to_string())),
        Value::Number(n) => Value::Number(Cow::Owned(n.to_string())),
        Value::Raw(r) => Value::Raw(Cow::Owned(r.to_string())),
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: bench_scan PAGE.xml|PAGE.json [--iters N] [--mode scan|encode|both]");
        return ExitCode::from(1);
    };
    let mut iters = 5u32;
    let mut mode = "both".to_string();
    while let Some(flag) = args.next() {
        let v = args.next().unwrap_or_default();
        match flag.as_str() {
            "--iters" => iters = v.parse().unwrap_or(5),
            "--mode" => mode = v,
            _ => {
                eprintln!("bench_scan: unknown flag {flag}");
                return ExitCode::from(1);
            }
        }
    }
    let page = match std::fs::read(&path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench_scan: {path}: {e}");
            return ExitCode::from(1);
        }
    };
    let ctx = PageCtx {
        request_url: "https://127.0.0.1/ecp/reportingwebservice/reporting.svc/MessageTrace",
        window_start: 1_700_000_000,
        window_end: 1_700_003_600,
    };
    if mode != "encode" {
        let t = Instant::now();
        let c = cpu_secs();
        let mut records = 0u64;
        for _ in 0..iters {
            let mut n = 0u64;
            let end = scan_page(&page[..], &ctx, &mut |r| {
                black_box(r);
                n += 1;
                Ok(())
            });
            match end {
                Ok(e) => records = e.records.max(n),
                Err(e) => {
                    eprintln!("bench_scan: scan failed: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        let secs = cpu_secs() - c;
        let wall = t.elapsed().as_secs_f64();
        let n = records as f64 * f64::from(iters);
        println!(
            "scan records {records} iters {iters} secs {secs:.4} rate {:.0} bytes {} wall_rate {:.0}",
            n / secs,
            page.len(),
            n / wall
        );
    }
    if mode != "scan" {
        // Records owned once, outside the timed part.
        let mut recs: Vec<Record<'static>> = Vec::new();
        let scanned = scan_page(&page[..], &ctx, &mut |r| {
            let mut o = Record::new();
            for (name, v) in &r.fields {
                o.push(Cow::Owned(name.to_string()), owned(v));
            }
            recs.push(o);
            Ok(())
        });
        if let Err(e) = scanned {
            eprintln!("bench_scan: scan failed: {e}");
            return ExitCode::from(1);
        }
        let mut out = Vec::with_capacity(64 * 1024);
        let mut bytes = 0usize;
        let t = Instant::now();
        let c = cpu_secs();
        for _ in 0..iters {
            bytes = 0;
            for r in &recs {
                msgtrace::event::encode(black_box(r), 1_700_000_000, &mut out);
                if out.len() >= 64 * 1024 {
                    bytes += out.len();
                    black_box(&out);
                    out.clear();
                }
            }
            bytes += out.len();
            out.clear();
        }
        let secs = cpu_secs() - c;
        let wall = t.elapsed().as_secs_f64();
        let n = recs.len() as f64 * f64::from(iters);
        println!(
            "encode records {} iters {iters} secs {secs:.4} rate {:.0} bytes {bytes} wall_rate {:.0}",
            recs.len(),
            n / secs,
            n / wall
        );
    }
    ExitCode::SUCCESS
}
