//! The commands: what `msgtrace run|check|state` do, and their exit codes.
//!
//! Owns: config path resolution at the top, the start banner, printing check steps and
//! state, choosing this replica's inputs (`--shard`/`MSGTRACE_SHARD`, the hash lives in
//! `shard`) and idling when its shard owns none. Must not: parse arguments (`cli`) or hold pulling logic (`run`, `pull`).

use std::path::Path;

use crate::cli::{CheckCmd, Cli, Command, RunCmd, StateCmd};
use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::shard::Shard;
use crate::{info, time, warning};

/// `msgtrace 0.1.0 (x86_64-unknown-linux-musl, release)`.
pub fn version_line() -> String {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    format!(
        "msgtrace {} ({}, {})",
        env!("CARGO_PKG_VERSION"),
        target(),
        profile
    )
}

/// The target this binary was built for, e.g. `x86_64-unknown-linux-musl`.
pub fn target() -> String {
    let env = if cfg!(target_env = "musl") {
        "musl"
    } else if cfg!(target_env = "gnu") {
        "gnu"
    } else {
        "unknown"
    };
    format!(
        "{}-unknown-{}-{}",
        std::env::consts::ARCH,
        std::env::consts::OS,
        env
    )
}

/// Run the parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> u8 {
    if cli.version {
        println!("{}", version_line());
        return 0;
    }
    let result = match cli.command {
        None => Err(Error::Usage(
            "a command is needed: run, check or state (see msgtrace --help)".into(),
        )),
        Some(Command::Run(c)) => cmd_run(&c),
        Some(Command::Check(c)) => cmd_check(&c),
        Some(Command::State(c)) => cmd_state(&c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            crate::log::write(
                crate::log::Level::Error,
                "MainProcess::MainThread",
                format_args!("{e}"),
            );
            e.exit_code()
        }
    }
}

fn load(flag: Option<&Path>) -> Result<Config> {
    let path = config::resolve_path(flag);
    let cfg = config::load(&path)?;
    crate::log::set_debug(cfg.globals.debug);
    for w in &cfg.warnings {
        warning!("MainProcess::MainThread", "{w}");
    }
    Ok(cfg)
}

/// The shard of this replica: `--shard`, else `$MSGTRACE_SHARD`, else none (all inputs).
fn shard(flag: Option<&str>) -> Result<Option<Shard>> {
    let (text, source) = match flag {
        Some(f) => (f.to_string(), "--shard"),
        None => match std::env::var("MSGTRACE_SHARD") {
            Ok(v) if !v.trim().is_empty() => (v, "MSGTRACE_SHARD"),
            _ => return Ok(None),
        },
    };
    crate::shard::parse(&text, crate::output::tls::host_name(), source).map(Some)
}

/// Keep only the inputs whose tenant this shard owns; returns (owned, enabled before).
fn apply_shard(cfg: &mut Config, shard: Shard) -> (usize, usize) {
    let before = cfg.inputs.iter().filter(|i| i.enabled).count();
    cfg.inputs
        .retain(|i| shard.owns(i.credentials.tenant_id.expose()));
    let owned = cfg.inputs.iter().filter(|i| i.enabled).count();
    (owned, before)
}

fn cmd_run(c: &RunCmd) -> Result<u8> {
    let shard = shard(c.shard.as_deref())?;
    let mut cfg = load(c.config.as_deref())?;
    info!(
        "MainProcess::MainThread",
        "{{\"collector_name\": \"{}\", \"collector_version\": \"{}\", \"build\": \"{}\", \"config\": \"{}\", \"started_at\": \"{}\"}}",
        cfg.globals.name,
        env!("CARGO_PKG_VERSION"),
        version_line(),
        cfg.path.display(),
        humantime::format_rfc3339_micros(std::time::SystemTime::now())
    );
    crate::preflight::run(&cfg)?;
    if let Some(s) = shard {
        let (owned, before) = apply_shard(&mut cfg, s);
        let names: Vec<String> = cfg
            .inputs
            .iter()
            .filter(|i| i.enabled)
            .map(|i| format!("{}#{}", i.name, i.id))
            .collect();
        info!(
            "MainProcess::MainThread",
            "shard {s}: this replica runs {owned} of {before} enabled input(s){}{}",
            if names.is_empty() { "" } else { ": " },
            names.join(", ")
        );
        if owned == 0 {
            return idle(&cfg, c.once);
        }
    }
    crate::run::run(&cfg, c.once)
}

/// A shard that owns no tenant: nothing to pull or send. `--once` ends at once; otherwise
/// the replica waits for SIGTERM and answers its probes (ready: it has nothing to do).
fn idle(cfg: &Config, once: bool) -> Result<u8> {
    if once {
        info!(
            "MainProcess::MainThread",
            "nothing to do: this shard owns no input"
        );
        return Ok(0);
    }
    crate::run::install_signals();
    let mut quiet = cfg.clone();
    quiet.outputs.clear();
    crate::metrics::start(&quiet)?;
    info!(
        "MainProcess::MainThread",
        "this shard owns no input: idle until stopped"
    );
    while !crate::run::stop_requested() {
        crate::metrics::heartbeat();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    info!("MainProcess::MainThread", "stopped");
    Ok(0)
}

fn cmd_check(c: &CheckCmd) -> Result<u8> {
    let path = config::resolve_path(c.config.as_deref());
    let (cfg, mut steps) = crate::check::offline_steps(&path);
    if !c.offline {
        if let Some(cfg) = &cfg {
            steps.extend(crate::check::online_steps(cfg));
        }
    }
    let ok = steps.iter().all(|s| s.ok);
    for s in &steps {
        println!("{s}");
    }
    Ok(if ok { 0 } else { 2 })
}

fn cmd_state(c: &StateCmd) -> Result<u8> {
    let shard = shard(c.shard.as_deref())?;
    let mut cfg = load(c.config.as_deref())?;
    if let Some(s) = shard {
        let total = cfg.inputs.len();
        cfg.inputs
            .retain(|i| s.owns(i.credentials.tenant_id.expose()));
        println!("shard {s} owns {} of {total} input(s)", cfg.inputs.len());
    }
    let now = time::now();
    let chosen: Vec<_> = cfg
        .inputs
        .iter()
        .filter(|i| c.input.as_deref().is_none_or(|w| w == i.name || w == i.id))
        .collect();
    if chosen.is_empty() {
        if shard.is_some() && c.input.is_none() {
            return Ok(0);
        }
        return Err(Error::Usage(format!(
            "no input named or with id {:?} in {}{}",
            c.input.as_deref().unwrap_or(""),
            cfg.path.display(),
            shard.map_or(String::new(), |s| format!(" (shard {s})"))
        )));
    }
    match c.action.as_str() {
        "show" => {
            for i in chosen {
                let service = i.service.api.service_name();
                let path = crate::state::state_path(&cfg.globals.state_dir, &i.id, service);
                println!("{}#{} {}:", i.name, i.id, service);
                let other = i.service.api.other();
                let other_path =
                    crate::state::state_path(&cfg.globals.state_dir, &i.id, other.service_name());
                match crate::state::peek(&path)? {
                    None => match crate::state::peek(&other_path)? {
                        Some((cursor, _)) => println!(
                            "  no state yet: the first run takes over the cursor {} left ({}), window start {}",
                            other.service_name(),
                            other_path.display(),
                            time::rfc3339(cursor.window_start)
                        ),
                        None => println!(
                            "  no state yet ({}): the first run starts {} day(s) back",
                            path.display(),
                            i.cutoff_days
                        ),
                    },
                    Some((cursor, size)) => {
                        println!("  file: {} ({size} bytes)", path.display());
                        for line in crate::state::describe(&cursor, now).lines() {
                            println!("  {line}");
                        }
                        let ledger = crate::ledger::ledger_path(&cfg.globals.state_dir, &i.id);
                        if let Ok(m) = std::fs::symlink_metadata(&ledger) {
                            println!("  delivery ledger: {} ({} bytes)", ledger.display(), m.len());
                        }
                    }
                }
                if let Some(line) = crate::details::queue_line(&cfg.globals.state_dir, i)? {
                    println!("  {line}");
                }
            }
            Ok(0)
        }
        "reset" => {
            for i in chosen {
                let service = i.service.api.service_name();
                // Clear the other service's cursor too: it would otherwise be taken over
                // on the next start, which is not what a reset asks for.
                let mut cleared = Vec::new();
                for api in crate::source::Api::ALL {
                    let p =
                        crate::state::state_path(&cfg.globals.state_dir, &i.id, api.service_name());
                    if crate::state::reset(&p)? {
                        cleared.push(p.display().to_string());
                    }
                }
                // The delivery ledger of the input goes too: a reset pulls and sends again.
                let ledger = crate::ledger::ledger_path(&cfg.globals.state_dir, &i.id);
                if crate::ledger::remove(&ledger)? {
                    cleared.push(ledger.display().to_string());
                }
                // So does the queue of rows awaiting trace details: the rows come again.
                let queue = crate::detail_queue::queue_path(&cfg.globals.state_dir, &i.id);
                if crate::ledger::remove(&queue)? {
                    cleared.push(queue.display().to_string());
                }
                if cleared.is_empty() {
                    println!("{}#{} {}: no state to clear", i.name, i.id, service);
                } else {
                    println!(
                        "{}#{} {}: state cleared ({})",
                        i.name,
                        i.id,
                        service,
                        cleared.join(", ")
                    );
                }
            }
            Ok(0)
        }
        other => Err(Error::Usage(format!(
            "state: unknown action {other:?} — use show or reset"
        ))),
    }
}
