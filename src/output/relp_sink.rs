//! `relp` output: the RFC 5424 message of the `syslog` output, one per RELP `syslog`
//! frame, over one persistent `tls::Link` (TLS with the client certificate, or TCP), to
//! rsyslog's imrelp or Logstash's relp input.
//!
//! Owns: driving the pure session (`relp.rs`) over the link — opening the session on
//! each new connection (`ensure_ready`, and so `check`, does the open/rsp handshake),
//! writing frames, reading the receiver's answers, and riding out a broken session inside
//! `write_events` (window full) and `confirm`: reconnect with a short backoff and resend
//! every unacknowledged frame, within the drain time limit. "Confirmed" means every frame
//! written so far has `rsp 200`. Nothing written is ever lost while the process lives
//! (unacknowledged frames stay in the session; the link's byte replay is off,
//! `without_replay`), so `generation` does not change on a reconnect and the page is not
//! pulled again. Must not: frame anything but the
//! syslog message (the session does), or wait longer than the configured time limits.

use std::time::{Duration, Instant};

use super::relp::{Session, State, MAX_DATA, WINDOW};
use super::syslog;
use super::tls::{host_name, Link};
use super::{Sink, SinkStats, Timeouts};
use crate::config::TlsOutput;
use crate::error::{Error, Result};
use crate::info;

const COMP: &str = "OutputProcess::OutputSender";
/// Plaintext read from the receiver at once: an `rsp 200` is about 16 bytes, so one read
/// takes the answers to a whole window.
const READ_CHUNK: usize = 16 * 1024;
/// First wait before reconnecting inside `confirm` after a broken session; it doubles up
/// to `RECONNECT_MAX`, all within the drain time limit. A receiver restarted by its
/// supervisor is back within a second or two.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// Longest wait for the answer to `close` when the sink is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A RELP sink: session + link + the per-second syslog prefix.
pub struct RelpSink {
    name: String,
    /// `output relp_1 (host:port)`, the prefix of this sink's own messages.
    label: String,
    link: Link,
    session: Session,
    timeouts: Timeouts,
    tag: String,
    detail_tag: String,
    stream: super::Stream,
    /// The link generation the session was opened on: another one means a new session.
    session_gen: u64,
    /// 0 until the first session opened, then 1: reconnects lose nothing (see `//!`).
    generation: u64,
    prefix: Vec<u8>,
    prefix_secs: i64,
    /// One message being built; reused.
    msg: Vec<u8>,
    /// Read buffer for the receiver's answers; reused.
    inbuf: Vec<u8>,
    sent_total: u64,
    /// A permanent refusal (an event over the frame limit): every later call returns
    /// it, so the collector stops with the message instead of resending the page's
    /// other events forever.
    refused: Option<String>,
}

impl RelpSink {
    /// Prepare (not connect) the sink; a bad tag or local certificate problems fail here.
    pub fn open(name: &str, cfg: &TlsOutput, timeouts: Timeouts) -> Result<RelpSink> {
        let tag = syslog::app_name(name, &cfg.tag)?;
        let detail_tag = syslog::detail_app_name(name, &cfg.detail_tag)?;
        Ok(RelpSink {
            name: name.to_owned(),
            label: format!("output {name} ({}:{})", cfg.address, cfg.port),
            link: Link::new(name, cfg, timeouts)?
                .keep_received()
                .without_replay(),
            session: Session::new(WINDOW, MAX_DATA),
            timeouts,
            tag,
            detail_tag,
            stream: super::Stream::Trace,
            session_gen: 0,
            generation: 0,
            prefix: Vec::new(),
            prefix_secs: i64::MIN,
            msg: Vec::new(),
            inbuf: vec![0; READ_CHUNK],
            sent_total: 0,
            refused: None,
        })
    }

    fn refused(&self) -> Result<()> {
        match &self.refused {
            Some(m) => Err(Error::Output {
                message: m.clone(),
                transient: false,
            }),
            None => Ok(()),
        }
    }

    fn err(&self, message: String, transient: bool) -> Error {
        Error::Output {
            message: format!("{}: {message}", self.label),
            transient,
        }
    }

    /// Make sure a session is open on a live connection: connect if needed, `open`,
    /// wait for the receiver's answer, then write the frames still unacknowledged.
    fn open_session(&mut self) -> Result<()> {
        let current = self.link.connected()
            && self.session_gen == self.link.generation()
            && matches!(self.session.state(), State::Ready);
        if current {
            return Ok(());
        }
        if self.link.connected() && self.session_gen == self.link.generation() {
            // A session was begun on this very connection and broke: RELP has no second
            // `open` on a connection, so start over on a new one.
            let e = self.err("relp session broken; reconnecting".into(), true);
            self.link.drop_connection(&e);
        }
        self.session.broken();
        self.link.ensure_ready()?;
        self.session_gen = self.link.generation();
        self.session.connect(self.link.out());
        self.link.push()?;
        let limit = Instant::now()
            .checked_add(self.timeouts.connect)
            .unwrap_or_else(Instant::now);
        while self.session.state() == State::Opening {
            let n = self.link.read_available(&mut self.inbuf, limit)?;
            if n == 0 && Instant::now() >= limit {
                let e = self.err(
                    format!(
                        "no answer to the relp open within {:.1}s — check that the port is \
                         a RELP receiver (rsyslog imrelp, Logstash relp input), not plain syslog",
                        self.timeouts.connect.as_secs_f64()
                    ),
                    true,
                );
                self.link.drop_connection(&e);
                return Err(e);
            }
            let got = self.inbuf.get(..n).unwrap_or_default();
            if let Err(e) = self.session.receive(got, self.link.out()) {
                let e = e.context(self.label.clone());
                self.link.drop_connection(&e);
                return Err(e);
            }
        }
        if self.generation == 0 {
            self.generation = 1;
        } else if self.session.unacked() > 0 {
            info!(
                COMP,
                "{}: relp session reopened, resending {} unacknowledged event(s)",
                self.label,
                self.session.unacked()
            );
        }
        self.link.push()
    }

    /// One round: (re)open the session, write what is buffered, take one read of
    /// answers. True once `done` holds.
    fn advance(&mut self, done: fn(&Session) -> bool, deadline: Instant) -> Result<bool> {
        self.open_session()?;
        self.link.push()?;
        if done(&self.session) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            let e = self.err(
                format!(
                    "the receiver did not answer {} relp frame(s) within {:.1}s (it stopped \
                     or the network is down)",
                    self.session.unacked(),
                    self.timeouts.drain.as_secs_f64()
                ),
                true,
            );
            self.link.drop_connection(&e);
            return Err(e);
        }
        let n = self.link.read_available(&mut self.inbuf, deadline)?;
        let got = self.inbuf.get(..n).unwrap_or_default();
        if let Err(e) = self.session.receive(got, self.link.out()) {
            let e = e.context(self.label.clone());
            self.link.drop_connection(&e);
            return Err(e);
        }
        Ok(done(&self.session))
    }

    /// Drive the session until `done` holds, reconnecting with backoff after a broken
    /// session or a refusal, for at most the drain time limit.
    fn drive(&mut self, done: fn(&Session) -> bool) -> Result<()> {
        let deadline = Instant::now()
            .checked_add(self.timeouts.drain)
            .unwrap_or_else(Instant::now);
        let mut attempt: u32 = 0;
        loop {
            match self.advance(done, deadline) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    self.session.broken();
                    attempt = attempt.saturating_add(1);
                    let pause = crate::backoff::delay(RECONNECT_FIRST, attempt, RECONNECT_MAX);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !e.is_transient() || left <= pause {
                        return Err(e);
                    }
                    std::thread::sleep(pause);
                }
            }
        }
    }
}

impl Sink for RelpSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Connect and open the RELP session (the handshake `check` reports). One attempt:
    /// the caller's backoff paces retries.
    fn ensure_ready(&mut self) -> Result<()> {
        self.refused()?;
        let r = self.open_session();
        if r.is_err() {
            self.session.broken();
        }
        r
    }

    fn set_stream(&mut self, stream: super::Stream) {
        if stream != self.stream {
            self.stream = stream;
            self.prefix_secs = i64::MIN;
        }
    }

    fn write_events(&mut self, json_lines: &[u8], count: u64) -> Result<()> {
        self.refused()?;
        let now = crate::time::now();
        if now != self.prefix_secs {
            let tag = match self.stream {
                super::Stream::Trace => &self.tag,
                super::Stream::Detail => &self.detail_tag,
            };
            self.prefix = syslog::prefix(now, host_name(), tag);
            self.prefix_secs = now;
        }
        for line in json_lines.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            if !self.session.has_room() {
                // Back as soon as one read freed slots (a read takes every answer that
                // arrived, so refills come in batches). Waiting for half the window
                // instead stalls on receivers whose small answers sit in Nagle's
                // algorithm while we send nothing to carry the TCP ACK: measured 3.6k
                // vs 10.8k events/s against rsyslog imrelp (debug build).
                self.drive(Session::has_room)?;
            }
            self.msg.clear();
            self.msg.extend_from_slice(&self.prefix);
            self.msg.extend_from_slice(line);
            if let Err(e) = self.session.send(&self.msg, self.link.out()) {
                let e = e.context(self.label.clone());
                if !e.is_transient() {
                    self.refused = Some(e.to_string());
                }
                return Err(e);
            }
            if self.link.push_if_full().is_err() {
                // The frame is kept unacknowledged; the next `drive` reconnects and
                // resends it.
                self.session.broken();
            }
        }
        self.sent_total = self.sent_total.saturating_add(count);
        Ok(())
    }

    /// Returns once every frame written so far has `rsp 200`.
    fn confirm(&mut self) -> Result<()> {
        self.refused()?;
        if self.session.all_acked() {
            // Nothing outstanding (nothing buffered either: a buffered frame is unacked).
            return Ok(());
        }
        self.drive(Session::all_acked)
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn stats(&self) -> SinkStats {
        let unacked = u64::try_from(self.session.unacked_bytes()).unwrap_or(u64::MAX);
        SinkStats {
            sent_total: self.sent_total,
            connected: self.link.connected() && self.session.state() == State::Ready,
            queued_bytes: self.link.queued_bytes().saturating_add(unacked),
        }
    }
}

impl Drop for RelpSink {
    /// Close the session politely when nothing is outstanding, without hanging.
    fn drop(&mut self) {
        let idle = self.link.connected()
            && self.session_gen == self.link.generation()
            && self.session.state() == State::Ready
            && self.session.all_acked();
        if !idle || self.session.close(self.link.out()).is_err() || self.link.push().is_err() {
            return;
        }
        let limit = Instant::now()
            .checked_add(CLOSE_WAIT)
            .unwrap_or_else(Instant::now);
        while self.session.state() == State::Closing && Instant::now() < limit {
            match self.link.read_available(&mut self.inbuf, limit) {
                Ok(n) => {
                    let got = self.inbuf.get(..n).unwrap_or_default();
                    if self.session.receive(got, self.link.out()).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
}
