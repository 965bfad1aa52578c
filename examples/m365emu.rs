//! `m365emu`: the Microsoft 365 emulator of the tests as a process, for `make demo`
//! and benchmarks. Prints exactly one line `listening https://127.0.0.1:PORT` on stdout,
//! then serves until killed or `--exit-after SECS` (default 600; always bounded).
//!
//! ```text
//! cargo run --example m365emu -- --port 0 --ca-out DIR/ca.pem --tenants t1,t2:s3cret \
//!     --page-size 2000 --subject-pad 5000 --records-per-hour 20000 --exit-after 300
//! ```
//!
//! Flags: `--port N`, `--ca-out PATH`, `--tenants ID[:SECRET[:CLIENT_ID]],…` (default
//! secret `secret-ID`, client id `client-ID`), `--page-size N`, `--graph-max-top N`,
//! `--graph-limit N` (Graph requests per tenant per 5 min), `--subject-pad BYTES`,
//! `--records-per-hour N`, `--data-days N`, `--seed N`, `--origin EPOCH_SECS`,
//! `--token-lifetime SECS`, `--namespaces-https`, `--rate-429 F`, `--rate-503 F`,
//! `--rate-cut F`, `--rate-token-503 F`, `--max-consecutive N`, `--rws-unavailable`,
//! `--sp-missing ID,…`, `--roles ROLE,…` (for every tenant), `--log-served`,
//! `--settle-secs SECS`, `--graph-extra-field`,
//! `--exit-after SECS`. Must not: run unbounded or bind anything but 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

#[path = "../tests/emulator/mod.rs"]
mod emulator;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use emulator::{EmuOptions, Emulator, TenantSpec};

/// Longest `--exit-after` accepted: a day.
const MAX_EXIT_AFTER: u64 = 86_400;

fn usage(msg: &str) -> ExitCode {
    eprintln!("m365emu: {msg}");
    eprintln!("usage: m365emu [--port N] [--ca-out PATH] [--tenants ID[:SECRET[:CLIENT_ID]],...] [--page-size N] [--subject-pad N] [--records-per-hour N] [--data-days N] [--seed N] [--token-lifetime S] [--rate-429 F] [--rate-503 F] [--rate-cut F] [--rws-unavailable] [--sp-missing ID,...] [--exit-after S] ...");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let mut o = EmuOptions {
        log_served: false,
        ..Default::default()
    };
    let mut ca_out: Option<String> = None;
    let mut exit_after: u64 = 600;
    let mut sp_missing: Vec<String> = Vec::new();
    let mut roles: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        macro_rules! num {
            ($name:expr) => {
                match val($name).and_then(|v| {
                    v.parse()
                        .map_err(|_| format!("{}: not a number: {v}", $name))
                }) {
                    Ok(v) => v,
                    Err(e) => return usage(&e),
                }
            };
        }
        match flag.as_str() {
            "--port" => o.port = num!("--port"),
            "--ca-out" => match val("--ca-out") {
                Ok(v) => ca_out = Some(v),
                Err(e) => return usage(&e),
            },
            "--tenants" => match val("--tenants") {
                Ok(v) => {
                    o.tenants = v
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| {
                            let mut p = s.splitn(3, ':');
                            let id = p.next().unwrap_or_default();
                            let mut t = TenantSpec::new(id);
                            if let Some(sec) = p.next() {
                                t.client_secret = sec.to_string();
                            }
                            if let Some(cid) = p.next() {
                                t.client_id = cid.to_string();
                            }
                            t
                        })
                        .collect();
                }
                Err(e) => return usage(&e),
            },
            "--page-size" => o.page_size = num!("--page-size"),
            "--graph-max-top" => o.graph_max_top = num!("--graph-max-top"),
            "--graph-limit" => o.graph_limit_per_5min = num!("--graph-limit"),
            "--subject-pad" => o.subject_pad = num!("--subject-pad"),
            "--records-per-hour" => o.records_per_hour = num!("--records-per-hour"),
            "--data-days" => o.data_days = num!("--data-days"),
            "--seed" => o.seed = num!("--seed"),
            "--origin" => o.origin = Some(num!("--origin")),
            "--token-lifetime" => o.token_lifetime_secs = num!("--token-lifetime"),
            "--namespaces-https" => o.namespaces_https = true,
            "--rate-429" => o.faults.rate_429 = num!("--rate-429"),
            "--rate-503" => o.faults.rate_503 = num!("--rate-503"),
            "--rate-cut" => o.faults.rate_cut = num!("--rate-cut"),
            "--rate-token-503" => o.faults.rate_token_503 = num!("--rate-token-503"),
            "--max-consecutive" => o.faults.max_consecutive = num!("--max-consecutive"),
            "--rws-unavailable" => o.faults.rws_unavailable = true,
            "--log-served" => o.log_served = true,
            "--settle-secs" => o.settle_secs = Some(num!("--settle-secs")),
            "--graph-extra-field" => o.graph_extra_field = true,
            "--sp-missing" => match val("--sp-missing") {
                Ok(v) => sp_missing = v.split(',').map(str::to_string).collect(),
                Err(e) => return usage(&e),
            },
            "--roles" => match val("--roles") {
                Ok(v) => {
                    roles = Some(
                        v.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect(),
                    )
                }
                Err(e) => return usage(&e),
            },
            "--exit-after" => exit_after = num!("--exit-after"),
            "-h" | "--help" => return usage("help"),
            other => return usage(&format!("unknown flag {other}")),
        }
    }
    if o.tenants.is_empty() {
        return usage("--tenants is empty");
    }
    if exit_after == 0 || exit_after > MAX_EXIT_AFTER {
        return usage("--exit-after must be 1..=86400");
    }
    for t in &mut o.tenants {
        t.service_principal_missing = sp_missing.contains(&t.tenant_id);
        if let Some(r) = &roles {
            t.roles = r.clone();
        }
    }
    let emu = Emulator::start(o);
    if let Some(p) = &ca_out {
        if let Err(e) = emu.write_ca(p) {
            eprintln!("m365emu: cannot write CA to {p}: {e}");
            return ExitCode::from(2);
        }
    }
    for t in &emu.options().tenants {
        eprintln!(
            "m365emu: tenant {} client_id {} ({} records/hour, {} days)",
            t.tenant_id,
            t.client_id,
            emu.options().records_per_hour,
            emu.options().data_days
        );
    }
    println!("listening {}", emu.base_url());
    let _ = std::io::stdout().flush();
    let started = Instant::now();
    let limit = Duration::from_secs(exit_after);
    while started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(200).min(limit.saturating_sub(started.elapsed())));
    }
    let log = emu.request_log();
    eprintln!(
        "m365emu: exit after {exit_after} s: {} request(s), at most {} Graph request(s) of one tenant in any 5 minutes",
        log.len(),
        emu.graph_requests_in_any_5min()
    );
    emu.stop();
    ExitCode::SUCCESS
}
