//! The one persistent connection of the network outputs (devo_platform, syslog, and
//! acknowledging protocols such as RELP): TLS (rustls, ring, TLS 1.2 + 1.3) or plain TCP.
//!
//! Owns: building the rustls client config from `chain`/`cert`/`key` (with the checks
//! users need: files readable, PEM, key matching the certificate), connecting and
//! handshaking with bounded waits, turning rustls/io failures into messages that name
//! the fix, one reusable plaintext output buffer written in large chunks (large TLS
//! records), transport-level delivery confirmation (send queue drained, peer still
//! there), reading what the receiver sends (`read_available`, for protocols that
//! acknowledge), the connection generation, and logging state changes once. The link is
//! a state machine (`State`: Idle → Up ⇄ Down{replay}) whose transitions consume the old
//! state, so "connected", "what was logged" and "a resend is due" cannot disagree.
//! Must not: frame events (the sinks do), retry or sleep between reconnects (the
//! caller's backoff does).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection, RootCertStore};

use super::link_io::{peek_peer, read_into, unacked_bytes, write_tls_all};
use super::{pem, Timeouts};
use crate::config::TlsOutput;
use crate::error::{Error, Result};
use crate::{info, warning};

/// Plaintext buffered before it is written: 64 KiB become four full 16 KiB TLS records
/// in one socket write, so the per-record and per-syscall cost is paid rarely.
pub const FLUSH_AT: usize = 64 * 1024;
/// Most bytes of the last confirmed delivery kept for a resend after the connection
/// fails. "Confirmed" means the receiver's TCP acknowledged the bytes; a receiver that is
/// stopped right after (rsyslog on SIGTERM) drops what still sat in its socket buffer,
/// so the tail of the last confirmed delivery is sent again on the next connection.
/// Bounds both the memory (two buffers of this) and the duplicates per outage.
pub const REPLAY_MAX: usize = 512 * 1024;
/// Most received plaintext kept for `read_available` when the sink asked to keep it
/// (`keep_received`); beyond this the socket is not read until the sink drains it.
pub const INBOX_MAX: usize = 64 * 1024;
/// Longest a host name may be (RFC 1035 / RFC 5424 HOSTNAME).
const HOSTNAME_MAX: usize = 255;
/// After a TLS 1.3 handshake the server checks our certificate only once it has our
/// Finished: its verdict (an alert, or session tickets) comes one round trip later.
/// Wait twice the handshake time for it, within these bounds.
const PROBE_MIN: Duration = Duration::from_millis(300);
const PROBE_MAX: Duration = Duration::from_secs(2);
/// First and longest sleep between send-queue polls in `confirm`.
const DRAIN_POLL_FIRST: Duration = Duration::from_millis(1);
const DRAIN_POLL_MAX: Duration = Duration::from_millis(20);
/// Longest wait to send close_notify when a link is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Scratch for the bytes a receiver sends us (TLS tickets, alerts, acknowledgements).
pub(super) const READ_SCRATCH: usize = 4096;
/// Shortest socket read timeout `read_available` sets (zero would mean "forever").
pub(super) const READ_WAIT_MIN: Duration = Duration::from_millis(1);
/// Component of the connection-state log lines.
const COMP: &str = "OutputProcess::OutputSender";

/// The TLS side of a link, built once at open.
struct TlsSetup {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    has_client_cert: bool,
    chain: Option<PathBuf>,
    cert: Option<PathBuf>,
}

/// Where a link connects and how: fixed for the link's life.
struct Peer {
    /// `output devo_1 (host:port)`, the prefix of every message.
    label: String,
    address: String,
    port: u16,
    tls: Option<TlsSetup>,
    timeouts: Timeouts,
}

/// One established connection.
pub(super) struct Conn {
    pub(super) sock: TcpStream,
    pub(super) tls: Option<Box<ClientConnection>>,
    /// Plaintext the receiver sent, not yet taken by `read_available` (kept only when
    /// the sink asked for it; at most `INBOX_MAX` bytes).
    pub(super) inbox: VecDeque<u8>,
}

/// The connection state. Each state change is logged once, on the transition.
enum State {
    /// Never connected, nothing logged yet.
    Idle,
    /// Connected; the connection was logged.
    Up(Box<Conn>),
    /// Down after a failure (logged). `replay`: the last confirmed delivery is resent
    /// on the next connection, since the old receiver may have dropped it unprocessed.
    Down { replay: bool },
}

impl State {
    /// A connection was made: Up, and whether a resend of the last delivery is due.
    fn connected(self, conn: Conn) -> (State, bool) {
        let replay = match self {
            State::Down { replay } => replay,
            State::Idle | State::Up(_) => false,
        };
        (State::Up(Box::new(conn)), replay)
    }

    /// The connection failed or could not be made: Down, and whether this change
    /// is news (to be logged). `resend`: what was confirmed may have been lost.
    fn failed(self, resend: bool) -> (State, bool) {
        match self {
            State::Down { replay } => (
                State::Down {
                    replay: replay || resend,
                },
                false,
            ),
            State::Idle | State::Up(_) => (State::Down { replay: resend }, true),
        }
    }
}

/// One persistent connection to a receiver, reopened on demand.
pub struct Link {
    peer: Peer,
    state: State,
    /// Bumped at every successful connect.
    generation: u64,
    /// Framed plaintext not yet written to the connection; reused, never shrunk.
    out: Vec<u8>,
    /// Keep what the receiver sends for `read_available` (else it is discarded).
    keep_received: bool,
    /// Resend the last confirmed delivery after a failure (see `REPLAY_MAX`).
    replay: bool,
    /// Chunks pushed since the last confirm (their tail, at most `REPLAY_MAX` bytes).
    since_confirm: Replay,
    /// Chunks of the last confirmed delivery: resent after a failure.
    last_confirmed: Replay,
    /// Recycled chunk buffers of the two replays.
    spare: Vec<Vec<u8>>,
}

/// Whole framed chunks (each one `push`), oldest first, at most `REPLAY_MAX` bytes.
/// Chunk buffers are recycled through `spare`, so keeping the replay tail costs one
/// memcpy per push and no allocation on the per-record path.
#[derive(Default)]
struct Replay {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
}

impl Replay {
    fn add(&mut self, chunk: &[u8], spare: &mut Vec<Vec<u8>>) {
        if chunk.len() > REPLAY_MAX {
            return;
        }
        while self.bytes.saturating_add(chunk.len()) > REPLAY_MAX {
            match self.chunks.pop_front() {
                Some(c) => {
                    self.bytes = self.bytes.saturating_sub(c.len());
                    spare.push(c);
                }
                None => break,
            }
        }
        let mut buf = spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(chunk);
        self.bytes = self.bytes.saturating_add(chunk.len());
        self.chunks.push_back(buf);
    }

    fn clear(&mut self, spare: &mut Vec<Vec<u8>>) {
        spare.extend(self.chunks.drain(..));
        self.bytes = 0;
    }
}

impl Link {
    /// Prepare (not connect) a link; local certificate problems fail here.
    pub fn new(name: &str, cfg: &TlsOutput, timeouts: Timeouts) -> Result<Link> {
        let label = format!("output {name} ({}:{})", cfg.address, cfg.port);
        let tls = if cfg.tls {
            Some(tls_setup(cfg).map_err(|e| e.context(label.clone()))?)
        } else {
            None
        };
        Ok(Link {
            peer: Peer {
                label,
                address: cfg.address.clone(),
                port: cfg.port,
                tls,
                timeouts,
            },
            state: State::Idle,
            generation: 0,
            out: Vec::with_capacity(FLUSH_AT.saturating_add(FLUSH_AT / 4)),
            keep_received: false,
            replay: true,
            since_confirm: Replay::default(),
            last_confirmed: Replay::default(),
            spare: Vec::new(),
        })
    }

    /// No transport-level resend of the last confirmed delivery after a reconnect: for
    /// protocols that resend what the receiver did not acknowledge themselves (RELP, which
    /// must also open its session before anything else is sent on a new connection).
    #[must_use]
    pub fn without_replay(mut self) -> Link {
        self.replay = false;
        self
    }

    /// Keep what the receiver sends (at most `INBOX_MAX` bytes) for `read_available`:
    /// for protocols whose receiver answers (RELP). Without it, received application
    /// data is discarded.
    #[must_use]
    pub fn keep_received(mut self) -> Link {
        self.keep_received = true;
        self
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn connected(&self) -> bool {
        matches!(self.state, State::Up(_))
    }

    /// Bytes buffered here plus bytes the peer has not acknowledged yet.
    pub fn queued_bytes(&self) -> u64 {
        let unacked = match &self.state {
            State::Up(c) => unacked_bytes(&c.sock).unwrap_or(0),
            State::Idle | State::Down { .. } => 0,
        };
        u64::try_from(self.out.len())
            .unwrap_or(u64::MAX)
            .saturating_add(unacked)
    }

    /// The output buffer the sink frames events into. Call `push_if_full` after.
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Writing needs a connection: the caller runs `ensure_ready` (with its backoff).
    pub fn require_connected(&mut self) -> Result<()> {
        if self.connected() {
            return Ok(());
        }
        self.out.clear();
        Err(self.not_connected())
    }

    fn not_connected(&self) -> Error {
        Error::Output {
            message: format!("{}: not connected", self.peer.label),
            transient: true,
        }
    }

    /// Write the buffer once it holds `FLUSH_AT` bytes.
    pub fn push_if_full(&mut self) -> Result<()> {
        if self.out.len() >= FLUSH_AT {
            self.push()
        } else {
            Ok(())
        }
    }

    /// Connect (and handshake) unless connected. Bumps the generation on success, and
    /// after a failure resends the last confirmed delivery on the new connection.
    pub fn ensure_ready(&mut self) -> Result<()> {
        if self.connected() {
            return Ok(());
        }
        self.out.clear();
        match self.peer.connect() {
            Ok((conn, how)) => {
                let (state, replay) =
                    std::mem::replace(&mut self.state, State::Idle).connected(conn);
                self.state = state;
                self.generation = self.generation.wrapping_add(1);
                info!(COMP, "{}: connected ({how})", self.peer.label);
                if replay && self.replay {
                    self.resend_last_confirmed()?;
                }
                Ok(())
            }
            Err(e) => {
                self.go_down(false, &e);
                Err(e)
            }
        }
    }

    /// Move to Down (dropping any connection) and log the change once.
    fn go_down(&mut self, resend: bool, e: &Error) {
        let (state, news) = std::mem::replace(&mut self.state, State::Idle).failed(resend);
        self.state = state;
        self.out.clear();
        if news {
            let then = if e.is_transient() {
                "; will reconnect"
            } else {
                ""
            };
            warning!(COMP, "{e}{then}");
        }
    }

    /// After a failure, send the last confirmed delivery again on the new connection:
    /// the old receiver may have acknowledged it without processing it. What it did
    /// process arrives twice (at most `REPLAY_MAX` bytes an outage); nothing is lost.
    fn resend_last_confirmed(&mut self) -> Result<()> {
        if self.last_confirmed.bytes == 0 {
            return Ok(());
        }
        info!(
            COMP,
            "{}: resending the last {} byte(s) delivered before the connection failed",
            self.peer.label,
            self.last_confirmed.bytes
        );
        let replay = std::mem::take(&mut self.last_confirmed);
        let mut result = Ok(());
        for c in &replay.chunks {
            self.out.extend_from_slice(c);
            result = self.push();
            if result.is_err() {
                break;
            }
        }
        // Kept until the next confirm replaces it: a second failure resends it again.
        self.last_confirmed = replay;
        result
    }

    /// Write everything buffered to the socket. On failure the connection is dropped.
    pub fn push(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let State::Up(conn) = &mut self.state else {
            return self.require_connected();
        };
        let r = match conn.tls.as_mut() {
            Some(tls) => tls
                .writer()
                .write_all(&self.out)
                .and_then(|()| write_tls_all(tls, &mut conn.sock)),
            None => conn.sock.write_all(&self.out),
        };
        if r.is_ok() && self.replay {
            self.since_confirm.add(&self.out, &mut self.spare);
        }
        self.out.clear();
        r.map_err(|e| self.fail_io(&e, "sending failed"))
    }

    /// Push, then wait until the peer's TCP acknowledged every byte (send queue empty)
    /// and check that the peer is still there (a peer that closed may have lost them).
    /// This is transport-level confirmation; a protocol with its own acknowledgements
    /// pushes, then waits for them through `read_available`, then calls `confirmed`.
    pub fn confirm(&mut self) -> Result<()> {
        self.push()?;
        let start = Instant::now();
        let mut pause = DRAIN_POLL_FIRST;
        loop {
            let State::Up(conn) = &mut self.state else {
                return self.require_connected();
            };
            let pending = match unacked_bytes(&conn.sock) {
                Ok(n) => n,
                Err(e) => {
                    let m = format!("cannot read the send queue: {e}");
                    return Err(self.fail(m));
                }
            };
            if let Err(e) = self.check_peer() {
                return Err(self.fail_io(&e, "the receiver closed the connection"));
            }
            if pending == 0 {
                self.confirmed();
                return Ok(());
            }
            if start.elapsed() >= self.peer.timeouts.drain {
                let m = format!(
                    "the receiver did not acknowledge {pending} byte(s) within {:.1}s \
                     (it stopped reading or the network is down)",
                    self.peer.timeouts.drain.as_secs_f64()
                );
                return Err(self.fail(m));
            }
            std::thread::sleep(pause);
            pause = pause.saturating_mul(2).min(DRAIN_POLL_MAX);
        }
    }

    /// Everything pushed so far is known to be taken by the receiver: it becomes the
    /// replay of the next failure (the older replay is recycled).
    pub fn confirmed(&mut self) {
        std::mem::swap(&mut self.last_confirmed, &mut self.since_confirm);
        self.since_confirm.clear(&mut self.spare);
    }

    /// Plaintext the receiver sent (TLS or TCP), for protocols that acknowledge: waits
    /// until at least one byte is there or `deadline` passes. Returns the bytes copied
    /// into `buf`, 0 when nothing came in time. A receiver that closed, reset or sent a
    /// TLS alert drops the connection (transient error, as for a failed write).
    pub fn read_available(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let r = match &mut self.state {
            State::Up(conn) => read_into(conn, buf, deadline, self.peer.timeouts.io),
            State::Idle | State::Down { .. } => return Err(self.not_connected()),
        };
        r.map_err(|e| self.fail_io(&e, "reading the receiver's answer failed"))
    }

    /// Drop the connection (after an error), log the change once, build the error.
    fn fail(&mut self, what: String) -> Error {
        // What was sent since the last confirm is pulled again by the puller; the last
        // confirmed delivery is resent by the next connect.
        self.since_confirm.clear(&mut self.spare);
        let e = Error::Output {
            message: format!("{}: {what}", self.peer.label),
            transient: true,
        };
        self.go_down(true, &e);
        e
    }

    /// Non-blocking look at what the peer sent: EOF, a reset or a TLS alert means it is
    /// gone (or going), and what we sent may not be processed.
    fn check_peer(&mut self) -> io::Result<()> {
        let State::Up(conn) = &mut self.state else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "not connected"));
        };
        conn.sock.set_nonblocking(true)?;
        let r = peek_peer(conn, self.keep_received);
        let _ = conn.sock.set_nonblocking(false);
        r
    }

    /// Drop the connection after an io error of an established connection. A
    /// certificate verdict that arrives late (a TLS 1.3 receiver slower than the
    /// post-handshake probe) keeps its clear, permanent message.
    fn fail_io(&mut self, e: &io::Error, what: &str) -> Error {
        let is_tls = e
            .get_ref()
            .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some());
        let late = self.peer.handshake_error(e);
        if is_tls && !late.is_transient() {
            self.go_down(false, &late);
            return late;
        }
        let m = self.peer.io_message(e, what);
        self.fail(m)
    }
}

impl Peer {
    fn connect(&self) -> Result<(Conn, String)> {
        let transient = |m: String| Error::Output {
            message: format!("{}: {m}", self.label),
            transient: true,
        };
        let addrs: Vec<_> = (self.address.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| transient(format!("cannot resolve {}: {e}", self.address)))?
            .collect();
        let mut last = None;
        let mut sock = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, self.timeouts.connect) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(mut sock) = sock else {
            let why = last.map_or_else(|| "no address".to_owned(), |e| e.to_string());
            return Err(transient(format!("cannot connect: {why}")));
        };
        let setup = |s: &TcpStream| -> io::Result<()> {
            s.set_nodelay(true)?;
            s.set_write_timeout(Some(self.timeouts.io))?;
            s.set_read_timeout(Some(self.timeouts.connect))
        };
        setup(&sock).map_err(|e| transient(format!("socket setup: {e}")))?;
        let Some(t) = &self.tls else {
            return Ok((
                Conn {
                    sock,
                    tls: None,
                    inbox: VecDeque::new(),
                },
                "TCP".into(),
            ));
        };
        let mut tls = ClientConnection::new(t.config.clone(), t.server_name.clone())
            .map_err(|e| transient(format!("tls setup: {e}")))?;
        tls.set_buffer_limit(None);
        let started = Instant::now();
        while tls.is_handshaking() {
            if let Err(e) = tls.complete_io(&mut sock) {
                return Err(self.handshake_error(&e));
            }
        }
        let version = tls.protocol_version();
        if version == Some(rustls::ProtocolVersion::TLSv1_3) {
            // The server's verdict on our certificate arrives after our Finished.
            let probe = started
                .elapsed()
                .saturating_mul(2)
                .clamp(PROBE_MIN, PROBE_MAX);
            let _ = sock.set_read_timeout(Some(probe));
            let deadline = Instant::now().checked_add(probe);
            while deadline.is_some_and(|d| Instant::now() < d) {
                match tls.read_tls(&mut sock) {
                    Ok(0) => {
                        return Err(self.rejected(
                            "the receiver closed the connection right after the handshake",
                        ))
                    }
                    Ok(_) => {
                        if let Err(e) = tls.process_new_packets() {
                            return Err(self
                                .handshake_error(&io::Error::new(io::ErrorKind::InvalidData, e)));
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.handshake_error(&e)),
                }
            }
        }
        let _ = sock.set_read_timeout(Some(self.timeouts.io));
        let how = format!(
            "{}, {}",
            version.map_or_else(|| "TLS".to_owned(), |v| format!("{v:?}")),
            tls.negotiated_cipher_suite()
                .map_or_else(String::new, |c| format!("{:?}", c.suite()))
        );
        Ok((
            Conn {
                sock,
                tls: Some(Box::new(tls)),
                inbox: VecDeque::new(),
            },
            how,
        ))
    }

    /// The receiver hung up during or right after the handshake.
    fn rejected(&self, what: &str) -> Error {
        let has_cert = self.tls.as_ref().is_some_and(|t| t.has_client_cert);
        if has_cert {
            Error::Output {
                message: format!(
                    "{}: {what} (did it reject our client certificate? check `cert`)",
                    self.label
                ),
                transient: true,
            }
        } else {
            Error::Tls(format!(
                "{}: {what}: the receiver probably demands a client certificate — \
                 configure `cert` and `key`",
                self.label
            ))
        }
    }

    /// Turn a handshake failure into a message naming the fix. Certificate problems
    /// are `Error::Tls` (reconnecting will not help); the rest is transient.
    fn handshake_error(&self, e: &io::Error) -> Error {
        let Some(t) = &self.tls else {
            return Error::Output {
                message: format!("{}: {e}", self.label),
                transient: true,
            };
        };
        let Some(re) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                return self.rejected("the receiver closed the connection during the handshake");
            }
            return Error::Output {
                message: format!(
                    "{}: {}",
                    self.label,
                    self.io_message(e, "tls handshake failed")
                ),
                transient: true,
            };
        };
        let label = &self.label;
        let cert_shown = t
            .cert
            .as_ref()
            .map_or_else(String::new, |p| format!(" {}", p.display()));
        match re {
            rustls::Error::InvalidCertificate(ce) => match ce {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    Error::Tls(match &t.chain {
                        Some(c) => format!(
                            "{label}: the receiver's certificate is not signed by chain {} \
                             — check `chain`",
                            c.display()
                        ),
                        None => format!(
                            "{label}: the receiver's certificate is not signed by a public CA \
                             — set `chain` to the receiver's CA file"
                        ),
                    })
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Error::Tls(format!(
                    "{label}: the receiver's certificate is not valid for {} — check \
                     `address` (it must be a name or IP in the receiver's certificate)",
                    self.address
                )),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Error::Tls(format!("{label}: the receiver's certificate has expired"))
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Error::Tls(format!(
                        "{label}: the receiver's certificate is not valid yet (check the clock)"
                    ))
                }
                other => Error::Tls(format!(
                    "{label}: the receiver's certificate {}",
                    cert_problem(other)
                )),
            },
            rustls::Error::AlertReceived(alert) => {
                let a = *alert;
                let no_cert = !t.has_client_cert;
                if no_cert
                    && matches!(
                        a,
                        AlertDescription::CertificateRequired
                            | AlertDescription::HandshakeFailure
                            | AlertDescription::BadCertificate
                            | AlertDescription::AccessDenied
                    )
                {
                    Error::Tls(format!(
                        "{label}: the receiver demands a client certificate (alert {a:?}) — \
                         configure `cert` and `key`"
                    ))
                } else if matches!(
                    a,
                    AlertDescription::BadCertificate
                        | AlertDescription::UnknownCA
                        | AlertDescription::CertificateUnknown
                        | AlertDescription::UnsupportedCertificate
                        | AlertDescription::CertificateRevoked
                        | AlertDescription::CertificateExpired
                        | AlertDescription::AccessDenied
                        | AlertDescription::DecryptError
                ) {
                    Error::Tls(format!(
                        "{label}: the receiver rejected our client certificate{cert_shown} \
                         (alert {a:?}) — check that `cert` is signed by a CA the receiver trusts"
                    ))
                } else {
                    Error::Output {
                        message: format!(
                            "{label}: the receiver refused the handshake (alert {a:?})"
                        ),
                        transient: true,
                    }
                }
            }
            other => Error::Output {
                message: format!("{label}: tls handshake failed: {other}"),
                transient: true,
            },
        }
    }

    /// Describe an io error of an established connection.
    fn io_message(&self, e: &io::Error, what: &str) -> String {
        if let Some(re) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return match re {
                rustls::Error::AlertReceived(a) => format!("{what}: the receiver sent alert {a:?}"),
                other => format!("{what}: tls: {other}"),
            };
        }
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
                "{what}: the receiver stopped reading (a write blocked for {:.1}s)",
                self.timeouts.io.as_secs_f64()
            ),
            io::ErrorKind::UnexpectedEof => what.to_owned(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                format!("{what}: the receiver closed the connection ({e})")
            }
            _ => format!("{what}: {e}"),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let State::Up(conn) = std::mem::replace(&mut self.state, State::Idle) {
            let Conn { mut sock, tls, .. } = *conn;
            if let Some(mut tls) = tls {
                // Say goodbye properly, but never hang on a receiver that stopped reading.
                let _ = sock.set_write_timeout(Some(CLOSE_WAIT));
                tls.send_close_notify();
                let _ = write_tls_all(&mut tls, &mut sock);
            }
        }
    }
}

fn tls_setup(cfg: &TlsOutput) -> Result<TlsSetup> {
    let server_name = ServerName::try_from(cfg.address.clone()).map_err(|_| {
        Error::Tls(format!(
            "address {:?} is not a valid host name or IP address — check `address`",
            cfg.address
        ))
    })?;
    let mut roots = RootCertStore::empty();
    match &cfg.chain {
        Some(chain) => {
            for c in pem::load_certs(chain, "chain")? {
                roots.add(c).map_err(|e| {
                    Error::Tls(format!(
                        "chain {}: not a usable CA certificate: {e} — check `chain`",
                        chain.display()
                    ))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(format!("tls setup: {e}")))?
            .with_root_certificates(roots);
    let config = match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => {
            let certs = pem::load_certs(cert, "cert")?;
            let key_der = pem::load_key(key)?;
            let old_version = certs
                .first()
                .and_then(|c| pem::not_v3("cert", cert, c.as_ref()));
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| match (e, old_version) {
                    (_, Some(words)) => Error::Tls(words),
                    (rustls::Error::InconsistentKeys(_), None) => Error::Tls(format!(
                        "key {} does not match certificate {} — check `cert` and `key`",
                        key.display(),
                        cert.display()
                    )),
                    (other, None) => Error::Tls(format!(
                        "key {}: not a usable RSA or ECDSA private key: {other} — check `key`",
                        key.display()
                    )),
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => {
            return Err(Error::Tls(
                "`cert` is set but `key` is not — set both".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(Error::Tls(
                "`key` is set but `cert` is not — set both".into(),
            ))
        }
    };
    Ok(TlsSetup {
        config: Arc::new(config),
        server_name,
        has_client_cert: cfg.cert.is_some(),
        chain: cfg.chain.clone(),
        cert: cfg.cert.clone(),
    })
}

/// This machine's host name for the syslog header, read once: the kernel's
/// `/proc/sys/kernel/hostname`, else gethostname(2), else `localhost`. Only printable
/// ASCII without spaces is kept (RFC 5424 HOSTNAME).
pub fn host_name() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(libc_hostname)
            .unwrap_or_default();
        sanitize_host(&raw)
    })
}

fn sanitize_host(raw: &str) -> String {
    let h: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(HOSTNAME_MAX)
        .collect();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

fn libc_hostname() -> Option<String> {
    let mut buf = [0u8; HOSTNAME_MAX + 1];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(buf.get(..end)?).into_owned())
}

/// For protocols that see a broken session above the transport (RELP `serverclose`, a
/// refusal, a receiver that stopped answering): drop the connection now. No replay of
/// the last confirmed delivery is armed — such a protocol resends what it needs itself.
impl Link {
    pub fn drop_connection(&mut self, why: &Error) {
        self.go_down(false, why);
    }
}

/// A certificate error rustls only names by a Rust identifier, in words.
fn cert_problem(e: &CertificateError) -> String {
    let name = format!("{e:?}");
    let known: [(&str, &str); 7] = [
        (
            "CaUsedAsEndEntity",
            "is a CA certificate (a self-signed CA, CA:TRUE) used as the server's own: issue the receiver a server certificate (CA:FALSE, with its name) from that CA and put the CA in `chain`",
        ),
        (
            "EndEntityUsedAsCa",
            "is signed by a certificate that is not a CA (CA:FALSE): the chain is wrong",
        ),
        (
            "UnsupportedCertVersion",
            "is not X.509 v3: rustls needs v3 — reissue it with extensions",
        ),
        (
            "InvalidPurpose",
            "is not for TLS servers (extended key usage without serverAuth)",
        ),
        (
            "UnhandledCriticalExtension",
            "has a critical extension rustls does not know",
        ),
        (
            "UnsupportedCriticalExtension",
            "has a critical extension rustls does not know",
        ),
        (
            "Revoked",
            "is revoked",
        ),
    ];
    known.iter().find(|(k, _)| name.contains(k)).map_or_else(
        || format!("is not acceptable ({name}) — check the receiver's certificate and `chain`"),
        |(_, w)| (*w).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn certificate_errors_named_by_rust_identifiers_get_words() {
        let e = CertificateError::BadEncoding;
        assert!(cert_problem(&e).starts_with("is not acceptable (BadEncoding)"));
        let e = CertificateError::InvalidPurpose;
        assert_eq!(
            cert_problem(&e),
            "is not for TLS servers (extended key usage without serverAuth)"
        );
    }

    #[test]
    fn replay_keeps_the_newest_whole_chunks_within_its_bound() {
        let mut r = Replay::default();
        let mut spare = Vec::new();
        let chunk = vec![b'x'; REPLAY_MAX / 3];
        for _ in 0..5 {
            r.add(&chunk, &mut spare);
        }
        assert_eq!(r.chunks.len(), 3);
        assert_eq!(r.bytes, 3 * chunk.len());
        assert!(
            spare.is_empty(),
            "evicted buffers are reused by the next add"
        );
        r.add(&vec![b'y'; REPLAY_MAX + 1], &mut spare); // larger than the bound: not kept
        assert_eq!(r.chunks.len(), 3);
        r.add(b"z", &mut spare);
        assert_eq!(r.chunks.back().map(Vec::as_slice), Some(&b"z"[..]));
        assert!(r.bytes <= REPLAY_MAX);
        let held = r.chunks.len();
        r.clear(&mut spare);
        assert_eq!((r.chunks.len(), r.bytes), (0, 0));
        assert_eq!(spare.len(), held, "cleared buffers go back to the pool");
    }

    /// Plain TCP to a loopback listener: after the receiver hangs up, the next
    /// connection starts with the last confirmed delivery, unless replay is off.
    fn resent_after_reconnect(replay: bool) -> Vec<u8> {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let cfg = TlsOutput {
            address: "127.0.0.1".into(),
            port: listener.local_addr().unwrap().port(),
            tls: false,
            chain: None,
            cert: None,
            key: None,
            tag: String::new(),
            detail_tag: String::new(),
        };
        let quick = Timeouts {
            connect: Duration::from_secs(5),
            io: Duration::from_secs(5),
            drain: Duration::from_secs(5),
        };
        let mut link = Link::new("o", &cfg, quick).unwrap();
        if !replay {
            link = link.without_replay();
        }
        link.ensure_ready().unwrap();
        let (mut first, _) = listener.accept().unwrap();
        link.out().extend_from_slice(b"a\n");
        link.confirm().unwrap();
        let mut got = [0u8; 2];
        first.read_exact(&mut got).unwrap();
        drop(first);
        let start = Instant::now();
        while link.confirm().is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the hang-up was not seen"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!link.connected());
        link.ensure_ready().unwrap();
        assert_eq!(link.generation(), 2);
        let (mut second, _) = listener.accept().unwrap();
        second
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut resent = vec![0u8; 16];
        let n = second.read(&mut resent).unwrap_or(0);
        resent.truncate(n);
        resent
    }

    #[test]
    fn the_last_confirmed_delivery_is_resent_on_the_next_connection_unless_off() {
        assert_eq!(resent_after_reconnect(true), b"a\n");
        assert_eq!(resent_after_reconnect(false), b"");
    }

    #[test]
    fn host_names_are_cleaned() {
        assert_eq!(sanitize_host("web-1\n"), "web-1");
        assert_eq!(sanitize_host(" \n"), "localhost");
        assert_eq!(sanitize_host("a b"), "ab");
        assert!(!host_name().is_empty());
    }

    #[test]
    fn cert_without_key_is_refused() {
        let cfg = TlsOutput {
            address: "127.0.0.1".into(),
            port: 1,
            tls: true,
            chain: None,
            cert: Some("/x.crt".into()),
            key: None,
            tag: String::new(),
            detail_tag: String::new(),
        };
        let e = Link::new("o", &cfg, Timeouts::default()).err().unwrap();
        assert!(e.to_string().contains("set both"), "{e}");
    }

    #[test]
    fn without_chain_the_built_in_roots_are_used() {
        let cfg = TlsOutput {
            address: "collector-us.devo.io".into(),
            port: 443,
            tls: true,
            chain: None,
            cert: None,
            key: None,
            tag: String::new(),
            detail_tag: String::new(),
        };
        let l = Link::new("o", &cfg, Timeouts::default()).unwrap();
        assert!(!l.connected());
        assert_eq!(l.generation(), 0);
        let bad = TlsOutput {
            address: "not a host".into(),
            ..cfg
        };
        let e = Link::new("o", &bad, Timeouts::default()).err().unwrap();
        assert!(e.to_string().contains("check `address`"), "{e}");
    }
}
