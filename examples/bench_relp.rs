//! `bench_relp`: events/s of the `relp` output next to `devo_platform`, both over one
//! loopback TLS connection with a client certificate, driven through the library sinks
//! (write a page, confirm it, as the puller does). The RELP peer is a minimal in-process
//! receiver that answers `rsp 200` to every frame as soon as it has read it, so the
//! figure is the client's cost with the 128-frame window, not a receiver's disk.
//!
//! ```text
//! bench_relp --pki DIR [--events N]   # DIR: ca.crt server.crt server.key client.crt client.key
//! ```
//! prints `relp EVENTS events/s` and `devo_platform EVENTS events/s`, one line each.
//!
//! Must not: bind anything but 127.0.0.1, or run unbounded (every wait has a limit).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use msgtrace::config::{OutputConfig, OutputKind, TlsOutput};
use msgtrace::output::{self, Timeouts};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

/// Events a page, as a Graph page of the throughput run.
const PAGE: usize = 2000;
/// Longest a receiver waits for its one connection or for data.
const IDLE: Duration = Duration::from_secs(60);

fn fail(msg: &str) -> ExitCode {
    eprintln!("bench_relp: {msg}");
    ExitCode::from(1)
}

fn server_config(pki: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.join("server.crt"))
        .map_err(|e| format!("server.crt: {e}"))?
        .filter_map(|c| c.ok())
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.join("server.key"))
        .map_err(|e| format!("server.key: {e}"))?;
    let mut roots = RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(pki.join("ca.crt")).map_err(|e| format!("ca.crt: {e}"))?
    {
        let _ = roots.add(c.map_err(|e| e.to_string())?);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(cfg))
}

/// Accept one connection; read everything; when `relp`, answer every frame.
fn receiver(
    cfg: Arc<ServerConfig>,
    relp: bool,
) -> Result<(u16, std::thread::JoinHandle<u64>), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let h = std::thread::spawn(move || {
        let Ok((mut sock, _)) = listener.accept() else {
            return 0;
        };
        let _ = sock.set_read_timeout(Some(IDLE));
        // Answers go out at once, as imrelp's do (librelp uncorks after each burst).
        let _ = sock.set_nodelay(true);
        let Ok(mut tls) = ServerConnection::new(cfg) else {
            return 0;
        };
        let mut s = rustls::Stream::new(&mut tls, &mut sock);
        let mut buf = vec![0u8; 256 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        let mut frames = 0u64;
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => return frames,
                Ok(n) => n,
            };
            if !relp {
                frames += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                continue;
            }
            pending.extend_from_slice(&buf[..n]);
            let mut answers = Vec::new();
            let mut at = 0;
            // TXNR SP COMMAND SP DATALEN [SP DATA] LF
            while let Some(f) = frame_at(&pending[at..]) {
                let (txnr, cmd, end) = f;
                let data: &[u8] = match cmd {
                    b"open" => b"200 OK\nrelp_version=0\nrelp_software=bench_relp\ncommands=syslog",
                    b"close" => b"",
                    _ => b"200 OK",
                };
                if cmd == b"syslog" {
                    frames += 1;
                }
                answers.extend_from_slice(txnr);
                answers.extend_from_slice(format!(" rsp {}", data.len()).as_bytes());
                if !data.is_empty() {
                    answers.push(b' ');
                    answers.extend_from_slice(data);
                }
                answers.push(b'\n');
                at += end;
            }
            pending.drain(..at);
            if !answers.is_empty() && s.write_all(&answers).is_err() {
                return frames;
            }
        }
    });
    Ok((port, h))
}

/// (txnr, command, frame length) of a complete frame at the start of `b`.
fn frame_at(b: &[u8]) -> Option<(&[u8], &[u8], usize)> {
    let sp1 = b.iter().position(|&c| c == b' ')?;
    let sp2 = sp1 + 1 + b.get(sp1 + 1..)?.iter().position(|&c| c == b' ')?;
    let len_end = sp2 + 1 + b.get(sp2 + 1..)?.iter().position(|c| !c.is_ascii_digit())?;
    let len: usize = std::str::from_utf8(b.get(sp2 + 1..len_end)?)
        .ok()?
        .parse()
        .ok()?;
    let lf = if len == 0 { len_end } else { len_end + 1 + len };
    (b.len() > lf).then(|| (&b[..sp1], &b[sp1 + 1..sp2], lf + 1))
}

fn events(from: usize, n: usize) -> Vec<u8> {
    let pad = "x".repeat(700);
    let mut out = Vec::new();
    for i in from..from + n {
        out.extend_from_slice(
            format!(
                "{{\"Organization\":\"contoso.onmicrosoft.com\",\"MessageId\":\"<m{i}@contoso.com>\",\
                 \"Received\":\"2026-11-24T10:00:00.1234567Z\",\"SenderAddress\":\"a@contoso.com\",\
                 \"RecipientAddress\":\"b{i}@fabrikam.com\",\"Subject\":\"{pad}\",\
                 \"Status\":\"Delivered\",\"Size\":{i},\"MessageTraceId\":\"id-{i:08}\"}}\n"
            )
            .as_bytes(),
        );
    }
    out
}

fn run(kind: OutputKind, pages: &[Vec<u8>], n_pages: usize) -> Result<f64, String> {
    let cfg = OutputConfig {
        name: "bench".into(),
        kind,
    };
    let mut sink = output::open_with(&cfg, Timeouts::default()).map_err(|e| e.to_string())?;
    sink.ensure_ready().map_err(|e| e.to_string())?;
    let start = Instant::now();
    for i in 0..n_pages {
        let page = &pages[i % pages.len()];
        sink.write_events(page, PAGE as u64)
            .map_err(|e| e.to_string())?;
        sink.confirm().map_err(|e| e.to_string())?;
    }
    Ok((n_pages * PAGE) as f64 / start.elapsed().as_secs_f64())
}

fn main() -> ExitCode {
    let mut pki = None;
    let mut total = 200_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(v) = args.next() else {
            return fail(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--pki" => pki = Some(PathBuf::from(v)),
            "--events" => match v.parse() {
                Ok(n) => total = n,
                Err(_) => return fail("--events: not a number"),
            },
            _ => return fail(&format!("unknown flag {flag}")),
        }
    }
    let Some(pki) = pki else {
        return fail("usage: bench_relp --pki DIR [--events N]");
    };
    let cfg = match server_config(&pki) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let pages: Vec<Vec<u8>> = (0..10).map(|p| events(p * PAGE, PAGE)).collect();
    let n_pages = (total / PAGE).max(1);
    let bytes = pages[0].len() / PAGE;
    for relp in [true, false] {
        let (port, h) = match receiver(cfg.clone(), relp) {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        let t = TlsOutput {
            address: "127.0.0.1".into(),
            port,
            tls: true,
            chain: Some(pki.join("ca.crt")),
            cert: Some(pki.join("client.crt")),
            key: Some(pki.join("client.key")),
            tag: String::new(),
            detail_tag: String::new(),
        };
        let (name, kind) = if relp {
            ("relp", OutputKind::Relp(t))
        } else {
            ("devo_platform", OutputKind::Devo(t))
        };
        let rate = match run(kind, &pages, n_pages) {
            Ok(r) => r,
            Err(e) => return fail(&format!("{name}: {e}")),
        };
        let got = h.join().unwrap_or(0);
        if got != (n_pages * PAGE) as u64 {
            return fail(&format!(
                "{name}: the receiver counted {got} of {} events",
                n_pages * PAGE
            ));
        }
        println!(
            "{name} {rate:.0} events/s ({} events of ~{bytes} bytes)",
            n_pages * PAGE
        );
    }
    ExitCode::SUCCESS
}
