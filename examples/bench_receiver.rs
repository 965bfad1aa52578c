//! `bench_receiver`: a TLS sink for `make bench` — it accepts connections on
//! 127.0.0.1, requires a client certificate signed by the given CA, reads everything as
//! fast as it can and counts lines and bytes. It prints `listening PORT` once, then one
//! line `conn N lines L bytes B secs S` per connection when that connection ends, so
//! the benchmark can check every event arrived.
//!
//! ```text
//! bench_receiver --cert server.crt --key server.key --ca ca.crt --exit-after 300
//! ```
//!
//! Must not: bind anything but 127.0.0.1, run unbounded (`--exit-after`, default 600 s),
//! or interpret what it receives beyond counting newlines.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

/// Read buffer: large, so one read drains several TLS records.
const READ_BUF: usize = 256 * 1024;
/// Longest a connection may stay silent before it is dropped.
const IDLE: Duration = Duration::from_secs(120);

fn fail(msg: &str) -> ExitCode {
    eprintln!("bench_receiver: {msg}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let mut cert = None;
    let mut key = None;
    let mut ca = None;
    let mut exit_after = 600u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(v) = args.next() else {
            return fail(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--cert" => cert = Some(v),
            "--key" => key = Some(v),
            "--ca" => ca = Some(v),
            "--exit-after" => match v.parse() {
                Ok(n) => exit_after = n,
                Err(_) => return fail("--exit-after: not a number"),
            },
            _ => return fail(&format!("unknown flag {flag}")),
        }
    }
    let (Some(cert), Some(key), Some(ca)) = (cert, key, ca) else {
        return fail("usage: bench_receiver --cert PEM --key PEM --ca PEM [--exit-after S]");
    };
    let certs: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(&cert) {
        Ok(it) => it.filter_map(|c| c.ok()).collect(),
        Err(e) => return fail(&format!("{cert}: {e}")),
    };
    let key = match PrivateKeyDer::from_pem_file(&key) {
        Ok(k) => k,
        Err(e) => return fail(&format!("{key}: {e}")),
    };
    let mut roots = RootCertStore::empty();
    match CertificateDer::pem_file_iter(&ca) {
        Ok(it) => {
            for c in it.flatten() {
                let _ = roots.add(c);
            }
        }
        Err(e) => return fail(&format!("{ca}: {e}")),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    {
        Ok(v) => v,
        Err(e) => return fail(&format!("client verifier: {e}")),
    };
    let config = match ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)
                .map_err(|e| e.to_string())
        }) {
        Ok(c) => Arc::new(c),
        Err(e) => return fail(&format!("server config: {e}")),
    };
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => return fail(&format!("bind: {e}")),
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    println!("listening {port}");
    let _ = std::io::stdout().flush();
    let deadline = Duration::from_secs(exit_after);
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!("bench_receiver: --exit-after reached");
        std::process::exit(0);
    });
    let n = Arc::new(AtomicU64::new(0));
    for sock in listener.incoming() {
        let Ok(sock) = sock else { continue };
        let id = n.fetch_add(1, Ordering::SeqCst) + 1;
        let config = config.clone();
        std::thread::spawn(move || serve(id, sock, config));
    }
    ExitCode::SUCCESS
}

fn serve(id: u64, sock: TcpStream, config: Arc<ServerConfig>) {
    let t0 = Instant::now();
    let _ = sock.set_read_timeout(Some(IDLE));
    let conn = match ServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conn {id}: {e}");
            return;
        }
    };
    let mut tls = StreamOwned::new(conn, sock);
    let mut buf = vec![0u8; READ_BUF];
    let (mut lines, mut bytes) = (0u64, 0u64);
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                bytes += k as u64;
                lines += buf
                    .get(..k)
                    .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64);
            }
            Err(e) => {
                if bytes == 0 {
                    eprintln!("conn {id}: {e}");
                }
                break;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "conn {id} lines {lines} bytes {bytes} secs {:.3}",
        t0.elapsed().as_secs_f64()
    );
    let _ = out.flush();
}
