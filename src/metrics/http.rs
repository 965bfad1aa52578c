//! The metrics listener: a minimal HTTP/1.1 server for `/metrics`, `/healthz` and
//! `/readyz` (SPEC §7), on std's TcpListener with no dependency.
//!
//! The request head is read by `Parser`, a pure state machine over bytes (no socket, no
//! clock: its tests feed every split point); `route` and `response` are pure too. The IO
//! loop around them is short: one accept thread, one thread per connection up to
//! `MAX_CONNECTIONS`, one request per connection (`Connection: close`), a deadline for
//! the whole request head and a bound on its size. Only GET is served.
//!
//! Must not: read a request body, keep a connection open, allocate per byte, or block the
//! collector — a slow or hostile client costs one bounded thread for `REQUEST_DEADLINE`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Registry;

/// Longest request head (request line and headers) accepted: scrapers and probes send
/// a few hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// Longest request line kept (method, path, version); the rest of the head is scanned only.
pub const MAX_REQUEST_LINE: usize = 2 * 1024;
/// Connections served at once; more are answered 503 and closed at once.
pub const MAX_CONNECTIONS: usize = 8;
/// The whole request head must arrive within this.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// One blocked write of the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Stack of the listener's threads: rendering allocates on the heap, nothing recurses.
const THREAD_STACK: usize = 128 * 1024;
/// Read chunk.
const READ_CHUNK: usize = 1024;

/// A parsed request head: what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method was GET.
    pub get: bool,
    /// The path of the target, without the query.
    pub path: String,
}

/// A request that is answered with an error status and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
}

/// Where the parser is in the request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the request line (empty lines before it are skipped).
    Line,
    /// At the start of a header line (or of the empty line ending the head).
    HeaderStart,
    /// After a CR at the start of a line: only LF may follow.
    EndCr,
    /// Inside a header line; `true` once its `:` was seen.
    Header(bool),
    /// The head is complete (or rejected): further bytes are ignored.
    Done,
}

/// Reads one request head, byte by byte, across any split of the input.
#[derive(Debug)]
pub struct Parser {
    state: State,
    line: Vec<u8>,
    total: usize,
    request: Option<Result<Request, Reject>>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

impl Parser {
    pub fn new() -> Parser {
        Parser {
            state: State::Line,
            line: Vec::new(),
            total: 0,
            request: None,
        }
    }

    /// Feed the next bytes; `Some` once the head is complete or must be rejected.
    /// After that, the result is given once and further bytes are ignored.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<Result<Request, Reject>> {
        for &b in bytes {
            if self.state == State::Done {
                return None;
            }
            self.total = self.total.saturating_add(1);
            if self.total > MAX_HEAD {
                return self.finish(Err(Reject {
                    status: 431,
                    reason: "request head too large",
                }));
            }
            self.state = match self.state {
                State::Line if b == b'\n' => {
                    if self.line.last() == Some(&b'\r') {
                        self.line.pop();
                    }
                    if self.line.is_empty() {
                        State::Line
                    } else {
                        self.request = Some(parse_request_line(&self.line));
                        State::HeaderStart
                    }
                }
                State::Line => {
                    if self.line.len() >= MAX_REQUEST_LINE {
                        return self.finish(Err(Reject {
                            status: 414,
                            reason: "request line too long",
                        }));
                    }
                    self.line.push(b);
                    State::Line
                }
                State::HeaderStart => match b {
                    b'\n' => return self.complete(),
                    b'\r' => State::EndCr,
                    b':' | b' ' | b'\t' => return self.finish(Err(BAD)),
                    _ => State::Header(false),
                },
                State::EndCr if b == b'\n' => return self.complete(),
                State::EndCr => return self.finish(Err(BAD)),
                State::Header(colon) if b == b'\n' => {
                    if !colon {
                        return self.finish(Err(BAD));
                    }
                    State::HeaderStart
                }
                State::Header(colon) => State::Header(colon || b == b':'),
                State::Done => State::Done,
            };
        }
        None
    }

    fn complete(&mut self) -> Option<Result<Request, Reject>> {
        let r = self.request.take().unwrap_or(Err(BAD));
        self.finish(r)
    }

    fn finish(&mut self, r: Result<Request, Reject>) -> Option<Result<Request, Reject>> {
        self.state = State::Done;
        Some(r)
    }
}

const BAD: Reject = Reject {
    status: 400,
    reason: "malformed request",
};

/// `METHOD SP target SP HTTP/1.x` (the CRLF already removed).
fn parse_request_line(line: &[u8]) -> Result<Request, Reject> {
    let text = std::str::from_utf8(line).map_err(|_| BAD)?;
    let mut parts = text.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD);
    };
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if method.is_empty() || !method.chars().all(token) {
        return Err(BAD);
    }
    if !target.starts_with('/') || !target.chars().all(|c| c.is_ascii_graphic()) {
        return Err(BAD);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(Reject {
            status: 505,
            reason: "only HTTP/1.0 and HTTP/1.1 are served",
        });
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok(Request {
        get: method == "GET",
        path: path.to_string(),
    })
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Health,
    Ready,
    NotFound,
    MethodNotAllowed,
}

pub fn route(req: &Request) -> Route {
    if !req.get {
        return Route::MethodNotAllowed;
    }
    match req.path.as_str() {
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Health,
        "/readyz" => Route::Ready,
        _ => Route::NotFound,
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Content type of the Prometheus text format.
pub const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; charset=utf-8";

/// A complete response that closes the connection.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason_phrase(status),
        body.len()
    );
    if status == 405 {
        head.push_str("Allow: GET\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

fn text(status: u16, line: &str) -> Vec<u8> {
    response(status, TEXT_TYPE, format!("{line}\n").as_bytes())
}

/// Check a `globals.metrics_listen` value: `host:port` with an IPv4 address, a host name
/// or a bracketed IPv6 address, and a port from 0 to 65535 (0: any free port, logged).
pub fn check_listen(value: &str) -> Result<(), String> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!("{value:?} is not host:port"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("port {port:?} is not a number from 0 to 65535"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ok = inner
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<Ipv6Addr>().is_ok());
        return if ok {
            Ok(())
        } else {
            Err(format!("{host:?} is not a bracketed IPv6 address"))
        };
    }
    if host.contains(':') {
        return Err(format!(
            "{host:?}: an IPv6 address goes in brackets, e.g. [::1]:9464"
        ));
    }
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if host.parse::<Ipv4Addr>().is_ok() || name_ok {
        Ok(())
    } else {
        Err(format!("{host:?} is not an IP address or a host name"))
    }
}

/// Connections being served.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Releases a connection slot when dropped.
struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bind `listen` and serve `reg` from a thread of its own; returns the bound address.
pub fn serve(listen: &str, reg: &'static Registry) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .stack_size(THREAD_STACK)
        .spawn(move || accept_loop(&listener, reg))?;
    Ok(addr)
}

fn accept_loop(listener: &TcpListener, reg: &'static Registry) {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of descriptors or an aborted handshake: do not spin.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if ACTIVE.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _slot = Slot;
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = (&stream).write_all(&text(503, "too many connections"));
            continue;
        }
        let slot = Slot;
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let _slot = slot;
                serve_one(stream, reg);
            });
        // On a failed spawn the closure (and its slot) is dropped: the count stays right.
        drop(spawned);
    }
}

fn serve_one(mut stream: TcpStream, reg: &Registry) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let started = Instant::now();
    let mut parser = Parser::new();
    let mut buf = [0u8; READ_CHUNK];
    let parsed = loop {
        let left = REQUEST_DEADLINE.saturating_sub(started.elapsed());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break Err(Reject {
                status: 408,
                reason: "request head not received in time",
            });
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Some(r) = parser.feed(buf.get(..n).unwrap_or_default()) {
                    break r;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break Err(Reject {
                    status: 408,
                    reason: "request head not received in time",
                });
            }
            Err(_) => return,
        }
    };
    let reply = match parsed {
        Err(r) => text(r.status, r.reason),
        Ok(req) => match route(&req) {
            Route::Metrics => {
                let mut body = String::with_capacity(4096);
                reg.render(crate::time::now(), super::rss_bytes(), &mut body);
                response(200, METRICS_TYPE, body.as_bytes())
            }
            Route::Health => match reg.health(Instant::now()) {
                Ok(()) => text(200, "ok"),
                Err(why) => text(503, &why),
            },
            Route::Ready => match reg.readiness(crate::run::stop_requested()) {
                Ok(()) => text(200, "ok"),
                Err(why) => text(503, &why),
            },
            Route::NotFound => text(404, "not found: try /metrics, /healthz or /readyz"),
            Route::MethodNotAllowed => text(405, "only GET is served"),
        },
    };
    let _ = stream.write_all(&reply);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Option<Result<Request, Reject>> {
        Parser::new().feed(input)
    }

    fn get(path: &str) -> Option<Result<Request, Reject>> {
        Some(Ok(Request {
            get: true,
            path: path.into(),
        }))
    }

    const SCRAPE: &[u8] = b"GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9464\r\nUser-Agent: Prometheus/2.42.0\r\nAccept: text/plain;version=0.0.4;q=1,*/*;q=0.1\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n";

    #[test]
    fn every_split_point_gives_the_same_request() {
        let cases: &[&[u8]] = &[
            SCRAPE,
            b"GET /readyz HTTP/1.0\n\n",
            b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /metrics HTTP/1.1\r\nbroken header\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
        ];
        for input in cases {
            let whole = parse_all(input);
            assert!(whole.is_some(), "{:?}", String::from_utf8_lossy(input));
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                let mut p = Parser::new();
                let r = p.feed(a).or_else(|| p.feed(b));
                assert_eq!(
                    r,
                    whole,
                    "cut at {cut} of {:?}",
                    String::from_utf8_lossy(input)
                );
            }
            let mut p = Parser::new();
            let bytewise = input.iter().find_map(|b| p.feed(std::slice::from_ref(b)));
            assert_eq!(bytewise, whole);
        }
    }

    #[test]
    fn requests_and_rejections() {
        assert_eq!(parse_all(SCRAPE), get("/metrics"));
        assert_eq!(parse_all(b"GET /readyz HTTP/1.0\n\n"), get("/readyz"));
        assert_eq!(
            parse_all(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Some(Ok(Request {
                get: false,
                path: "/metrics".into()
            }))
        );
        let status = |i: &[u8]| parse_all(i).and_then(|r| r.err()).map(|r| r.status);
        assert_eq!(status(b"GET /metrics HTTP/2.0\r\n\r\n"), Some(505));
        assert_eq!(status(b"GET metrics HTTP/1.1\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET  /metrics HTTP/1.1\r\n\r\n"), Some(400));
        assert_eq!(status(b"G(T /metrics HTTP/1.1\r\n\r\n"), Some(400));
        assert_eq!(
            status(b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            status(b"GET /metrics HTTP/1.1\r\n folded\r\n\r\n"),
            Some(400)
        );
        assert_eq!(status(b"GET /metrics HTTP/1.1\r\n\rX"), Some(400));
        assert_eq!(status(b"GET /m\xff HTTP/1.1\r\n\r\n"), Some(400));
        // Incomplete heads wait for more.
        assert_eq!(parse_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(parse_all(b"\r\n\r\n"), None);
    }

    #[test]
    fn heads_are_bounded() {
        let mut long_line = b"GET /".to_vec();
        long_line.resize(MAX_REQUEST_LINE + 10, b'a');
        assert_eq!(
            parse_all(&long_line)
                .and_then(|r| r.err())
                .map(|r| r.status),
            Some(414)
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        while many.len() <= MAX_HEAD {
            many.extend_from_slice(b"X-Filler: 0123456789abcdef\r\n");
        }
        assert_eq!(
            parse_all(&many).and_then(|r| r.err()).map(|r| r.status),
            Some(431)
        );
        // Bytes after a complete head are ignored, the result comes once.
        let mut p = Parser::new();
        assert!(p.feed(b"GET / HTTP/1.1\r\n\r\n").is_some());
        assert_eq!(p.feed(b"GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn routes() {
        let r = |get: bool, path: &str| {
            route(&Request {
                get,
                path: path.into(),
            })
        };
        assert_eq!(r(true, "/metrics"), Route::Metrics);
        assert_eq!(r(true, "/healthz"), Route::Health);
        assert_eq!(r(true, "/readyz"), Route::Ready);
        assert_eq!(r(true, "/"), Route::NotFound);
        assert_eq!(r(false, "/metrics"), Route::MethodNotAllowed);
        let resp = String::from_utf8(response(405, TEXT_TYPE, b"x\n")).unwrap_or_default();
        assert!(
            resp.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{resp}"
        );
        assert!(resp.contains("\r\nAllow: GET\r\n"), "{resp}");
        assert!(resp.contains("\r\nContent-Length: 2\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nx\n"), "{resp}");
    }

    #[test]
    fn listen_values() {
        for ok in [
            "127.0.0.1:9464",
            "0.0.0.0:0",
            "[::1]:9464",
            "[::]:80",
            "localhost:9464",
            "msgtrace.ns.svc:65535",
        ] {
            assert_eq!(check_listen(ok), Ok(()), "{ok}");
        }
        for bad in [
            "9464",
            "127.0.0.1",
            "127.0.0.1:65536",
            "127.0.0.1:x",
            ":9464",
            "::1:9464",
            "[::1:9464",
            "[x]:9464",
            "host name:9464",
            "127.0.0.1:-1",
        ] {
            assert!(check_listen(bad).is_err(), "{bad}");
        }
    }
}
