//! The emulator's HTTPS transport: certificates, the TLS server config, one thread per
//! connection, HTTP/1.1 request parsing with keep-alive, and response writing
//! (Content-Length or chunked, or cut mid-body with the connection dropped).
//!
//! Owns: bytes on the wire. Must not: know any Microsoft endpoint — it hands a parsed
//! `Request` to `routes::handle` and writes the `Response` it gets back.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::data::pct_decode;
use super::Shared;

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (token forms are tiny).
const MAX_BODY: usize = 1024 * 1024;
/// A kept-alive connection with no request for this long is closed.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// Read timeout: how often an idle connection looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// Bound on writing one response to a slow or stuck client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Chunk size of chunked responses.
const CHUNK: usize = 16 * 1024;

/// A CA, a server certificate for 127.0.0.1/localhost signed by it, and the server config.
pub struct Tls {
    pub ca_pem: String,
    pub config: Arc<ServerConfig>,
}

/// Generate the CA and the server certificate and build the rustls config.
pub fn make_tls() -> Tls {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("emulator: CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("emulator: CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "m365 emulator test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("emulator: CA cert");

    let key = KeyPair::generate().expect("emulator: server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("emulator: server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params
        .extended_key_usages
        .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("emulator: server cert");

    let chain = vec![cert.der().clone(), ca.der().clone()];
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("emulator: protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .expect("emulator: server cert config");
    Tls {
        ca_pem: ca.pem(),
        config: Arc::new(config),
    }
}

/// One parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path without the query, percent-decoded.
    pub path: String,
    /// The raw query string (after `?`), as sent.
    pub raw_query: String,
    /// Decoded query pairs; keys decoded too (`%24filter` is `$filter`).
    pub query: Vec<(String, String)>,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What to write back.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Write only this many body bytes, then drop the connection (no close_notify).
    pub cut_at: Option<usize>,
    /// Write the body in a hostile way (`BodyFault`).
    pub hostile: super::BodyFault,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
            cut_at: None,
            hostile: super::BodyFault::None,
        }
    }
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Parse `a=b&c=d` into decoded pairs.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (pct_decode(k), pct_decode(v)),
            None => (pct_decode(p), String::new()),
        })
        .collect()
}

/// Accept loop: runs until the stop flag is set (then `stop` connects once to wake it).
pub fn accept_loop(shared: Arc<Shared>, listener: TcpListener, config: Arc<ServerConfig>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let sh = Arc::clone(&shared);
        let cfg = Arc::clone(&config);
        workers.retain(|w| !w.is_finished());
        if let Ok(h) = std::thread::Builder::new()
            .name("m365emu-conn".into())
            .spawn(move || serve_conn(&sh, stream, cfg))
        {
            workers.push(h);
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

type Tls13Stream = StreamOwned<ServerConnection, TcpStream>;

fn serve_conn(shared: &Arc<Shared>, tcp: TcpStream, config: Arc<ServerConfig>) {
    let _ = tcp.set_read_timeout(Some(POLL));
    let _ = tcp.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = tcp.set_nodelay(true);
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, tcp);
    let mut buf: Vec<u8> = Vec::new();
    let mut served: u64 = 0;
    while let Ok(Some(req)) = read_request(shared, &mut tls, &mut buf) {
        let close_requested = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let resp = super::routes::handle(shared, &req);
        // Every third response on a connection is chunked, the rest carry a length.
        let chunked = served % 3 == 2;
        served += 1;
        if resp.hostile != super::BodyFault::None {
            let _ = write_hostile(shared, &mut tls, &resp);
            break;
        }
        match write_response(&mut tls, &resp, chunked) {
            Ok(true) if !close_requested => {}
            Ok(_) => {
                tls.conn.send_close_notify();
                let _ = tls.flush();
                break;
            }
            Err(_) => break,
        }
    }
    let _ = tls.sock.shutdown(Shutdown::Both);
}

/// Read one request; `None` when the peer closed, stayed idle too long, or the
/// emulator is stopping.
fn read_request(
    shared: &Shared,
    tls: &mut Tls13Stream,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Request>> {
    let idle_since = Instant::now();
    let mut tmp = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        match tls.read(&mut tmp) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(tmp.get(..n).unwrap_or(&[])),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if shared.stop.load(Ordering::SeqCst)
                    || (buf.is_empty() && idle_since.elapsed() > IDLE_LIMIT)
                {
                    return Ok(None);
                }
            }
            Err(_) => return Ok(None),
        }
    };
    let head = String::from_utf8_lossy(buf.get(..head_end).unwrap_or(&[])).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if len > MAX_BODY {
        return Ok(None);
    }
    let started = Instant::now();
    while buf.len() < head_end + len {
        match tls.read(&mut tmp) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(tmp.get(..n).unwrap_or(&[])),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if shared.stop.load(Ordering::SeqCst) || started.elapsed() > IDLE_LIMIT {
                    return Ok(None);
                }
            }
            Err(_) => return Ok(None),
        }
    }
    let body = buf.get(head_end..head_end + len).unwrap_or(&[]).to_vec();
    buf.drain(..head_end + len);
    // Absolute-form targets (`https://host/path?q`) are reduced to the path.
    let target = match target.find("://") {
        Some(i) => {
            let rest = target.get(i + 3..).unwrap_or("");
            rest.find('/')
                .and_then(|j| rest.get(j..))
                .unwrap_or("/")
                .to_string()
        }
        None => target,
    };
    let (path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    Ok(Some(Request {
        method,
        path: pct_decode(&path.replace('+', "%2B")),
        query: parse_query(&raw_query),
        raw_query,
        headers,
        body,
    }))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Write a hostile body (`BodyFault`), bounded by `MAX_FAULT_BODY_SECS` and the stop
/// flag; the connection is not reused.
fn write_hostile(shared: &Shared, tls: &mut Tls13Stream, resp: &Response) -> io::Result<()> {
    let until = Instant::now() + Duration::from_secs(super::MAX_FAULT_BODY_SECS);
    let live = || Instant::now() < until && !shared.stop.load(Ordering::SeqCst);
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (n, v) in &resp.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    match resp.hostile {
        super::BodyFault::Endless => {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            tls.write_all(head.as_bytes())?;
            // The feed's head, then comments for ever: no entry, no end.
            let head_len = find(&resp.body, b"<entry>").unwrap_or(resp.body.len().min(600));
            let start = resp.body.get(..head_len).unwrap_or(&resp.body);
            tls.write_all(format!("{:x}\r\n", start.len()).as_bytes())?;
            tls.write_all(start)?;
            tls.write_all(b"\r\n")?;
            let junk = format!("<!-- {} -->\r\n", "x".repeat(CHUNK - 16));
            while live() {
                tls.write_all(format!("{:x}\r\n", junk.len()).as_bytes())?;
                tls.write_all(junk.as_bytes())?;
                tls.write_all(b"\r\n")?;
            }
        }
        super::BodyFault::Slowloris { ms } => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", resp.body.len()));
            tls.write_all(head.as_bytes())?;
            tls.flush()?;
            for b in &resp.body {
                if !live() {
                    break;
                }
                tls.write_all(&[*b])?;
                tls.flush()?;
                let step = Instant::now() + Duration::from_millis(ms);
                while Instant::now() < step && live() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        super::BodyFault::None => {}
    }
    tls.flush()?;
    let _ = tls.sock.shutdown(Shutdown::Both);
    Ok(())
}

/// Write a response; `Ok(false)` when the connection must not be reused.
fn write_response(tls: &mut Tls13Stream, resp: &Response, chunked: bool) -> io::Result<bool> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (n, v) in &resp.headers {
        head.push_str(n);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("Server: Microsoft-IIS/10.0 (m365 emulator)\r\n");
    let chunked = chunked && resp.cut_at.is_none();
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", resp.body.len()));
    }
    tls.write_all(head.as_bytes())?;
    if let Some(cut) = resp.cut_at {
        tls.write_all(resp.body.get(..cut).unwrap_or(&resp.body))?;
        tls.flush()?;
        // Give the client a moment to read what was sent, then drop the socket with no
        // close_notify: the client sees a truncated body / unexpected EOF.
        std::thread::sleep(Duration::from_millis(20));
        let _ = tls.sock.shutdown(Shutdown::Both);
        return Ok(false);
    }
    if chunked {
        for c in resp.body.chunks(CHUNK) {
            tls.write_all(format!("{:x}\r\n", c.len()).as_bytes())?;
            tls.write_all(c)?;
            tls.write_all(b"\r\n")?;
        }
        tls.write_all(b"0\r\n\r\n")?;
    } else {
        tls.write_all(&resp.body)?;
    }
    tls.flush()?;
    Ok(true)
}
