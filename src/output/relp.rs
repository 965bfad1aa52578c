//! The RELP client session (Reliable Event Logging Protocol, as rsyslog's imrelp, librelp
//! and Logstash's relp input speak it) as a pure state machine: bytes the receiver sent
//! go in, frames to write come out, with no socket and no clock inside.
//!
//! Owns: the `open` command and its offers (`relp_version=0`, `relp_software`,
//! `commands=syslog`) and the check of the receiver's answer; transaction numbers
//! (1…999,999,999, then 1 again; 0 is the receiver's hints); `syslog` frames
//! (`TXNR SP COMMAND SP DATALEN [SP DATA] LF`, librelp's doc/relp.md and
//! src/relpframe.c); the window of unacknowledged frames, whose messages are kept so that
//! after a broken session every one of them is written again, renumbered, once the next
//! session is open; `rsp` parsing (200 acknowledges, anything else refuses); the
//! `serverclose` hint; `close`. Must not: read or write a socket, sleep or read a clock
//! (the sink in `relp_sink.rs` does), or drop an event: one larger than the frame limit is
//! an error naming the limit, never a silent skip. Input from the receiver never panics.

use std::collections::VecDeque;

use crate::error::{Error, Result};

/// Unacknowledged frames in flight, librelp's default window (`RELP_DFLT_WINDOW_SIZE`):
/// enough to keep a loopback or LAN link busy, small enough that a broken session resends
/// little. Also the bound on duplicates per broken session.
pub const WINDOW: usize = 128;
/// Largest DATALEN of a frame: librelp's default `maxDataSize` (128 KiB), which imrelp
/// enforces by closing the session. An event larger than this is an error, not a drop.
pub const MAX_DATA: usize = 128 * 1024;
/// Highest transaction number; the next one after it is 1 (doc/relp.md: "latched at
/// 999,999,999").
pub const TXNR_MAX: u32 = 999_999_999;
/// TXNR and DATALEN are at most nine digits (`NUMBER = 1*9DIGIT`).
const NUMBER_DIGITS: u8 = 9;
/// A command is 1 to 32 letters (`COMMAND = 1*32ALPHA`).
const COMMAND_MAX: usize = 32;
/// Largest frame the receiver may send us (an `rsp` with the open offers is the biggest):
/// librelp's client applies the same `maxDataSize`.
const RECEIVE_MAX: usize = MAX_DATA;
/// An `rsp`'s human-readable text is at most 80 octets; longer text is cut in messages.
const TEXT_MAX: usize = 80;
/// The protocol version offered and accepted: 0, the only one librelp and imrelp speak.
const RELP_VERSION: u32 = 0;

/// `relp_software` offer: name, version and, when Cargo.toml names one, the project URL.
fn software() -> String {
    let url = env!("CARGO_PKG_REPOSITORY");
    let mut s = format!("msgtrace,{}", env!("CARGO_PKG_VERSION"));
    if !url.is_empty() {
        s.push(',');
        s.push_str(url);
    }
    s
}

/// The transaction number after `txnr`.
pub fn next_txnr(txnr: u32) -> u32 {
    if txnr >= TXNR_MAX || txnr == 0 {
        1
    } else {
        txnr.saturating_add(1)
    }
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No session: before the first `connect`, after `broken` or after an error.
    Down,
    /// `open` written, its `rsp` not received yet.
    Opening,
    /// Open: `syslog` frames are written as they are sent.
    Ready,
    /// `close` written, its `rsp` not received yet.
    Closing,
    /// The receiver answered `close`: the connection may be dropped.
    Closed,
}

/// One event not yet acknowledged: its transaction number on the current session (0 when
/// not written on it yet) and its syslog message.
struct Pending {
    txnr: u32,
    msg: Vec<u8>,
}

/// A RELP client session over one connection after another. Frames are appended to the
/// caller's output buffer (`out`), which the caller writes to the connection.
pub struct Session {
    parser: Parser,
    core: Core,
}

/// Everything but the parser, so that a parsed frame (borrowing the parser) can be
/// handled with the rest mutable.
struct Core {
    state: State,
    next_txnr: u32,
    open_txnr: u32,
    close_txnr: u32,
    window: usize,
    max_data: usize,
    /// Unacknowledged events in send order; the first `written` are on the connection.
    unacked: VecDeque<Pending>,
    written: usize,
    unacked_bytes: usize,
    /// Recycled message buffers: no allocation per event once the window is warm.
    spare: Vec<Vec<u8>>,
    /// DATA of the `open` command, built once.
    offers: Vec<u8>,
}

impl Default for Session {
    fn default() -> Self {
        Session::new(WINDOW, MAX_DATA)
    }
}

impl Session {
    /// A session with `window` frames in flight (at least 1) and frames up to `max_data`.
    pub fn new(window: usize, max_data: usize) -> Session {
        let offers = format!(
            "relp_version={RELP_VERSION}\nrelp_software={}\ncommands=syslog",
            software()
        )
        .into_bytes();
        Session {
            parser: Parser::default(),
            core: Core {
                state: State::Down,
                next_txnr: 1,
                open_txnr: 0,
                close_txnr: 0,
                window: window.max(1),
                max_data,
                unacked: VecDeque::with_capacity(window.max(1)),
                written: 0,
                unacked_bytes: 0,
                spare: Vec::new(),
                offers,
            },
        }
    }

    pub fn state(&self) -> State {
        self.core.state
    }

    /// Another event may be sent (the window is not full).
    pub fn has_room(&self) -> bool {
        self.core.unacked.len() < self.core.window
    }

    /// Events sent and not acknowledged yet (written or waiting for the session).
    pub fn unacked(&self) -> usize {
        self.core.unacked.len()
    }

    /// Message bytes of the unacknowledged events.
    pub fn unacked_bytes(&self) -> usize {
        self.core.unacked_bytes
    }

    /// Every event sent so far has `rsp 200`.
    pub fn all_acked(&self) -> bool {
        self.core.unacked.is_empty()
    }

    /// A new connection is up: start a session on it with `open` (transaction numbers
    /// restart at 1). Unacknowledged events are written again once the receiver accepts.
    pub fn connect(&mut self, out: &mut Vec<u8>) {
        self.parser = Parser::default();
        let c = &mut self.core;
        c.next_txnr = 1;
        c.written = 0;
        for p in &mut c.unacked {
            p.txnr = 0;
        }
        c.open_txnr = c.take_txnr();
        write_frame(out, c.open_txnr, b"open", &c.offers);
        c.state = State::Opening;
    }

    /// The connection is gone (or is being dropped after an error): unacknowledged events
    /// stay and are written again on the next session.
    pub fn broken(&mut self) {
        self.core.state = State::Down;
        self.core.written = 0;
        self.parser = Parser::default();
    }

    /// Send one syslog message: it is written now when the session is open, else when it
    /// opens. Fails when it is larger than the frame limit (permanent) or the window is
    /// full (the caller must wait for acknowledgements first).
    pub fn send(&mut self, msg: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let c = &mut self.core;
        if msg.len() > c.max_data {
            return Err(Error::Output {
                message: format!(
                    "an event of {} bytes exceeds the relp frame limit of {} bytes (librelp's \
                     and imrelp's maxDataSize) — send this receiver's events with the syslog \
                     output instead",
                    msg.len(),
                    c.max_data
                ),
                transient: false,
            });
        }
        if c.unacked.len() >= c.window {
            return Err(Error::Output {
                message: format!(
                    "relp window of {} unacknowledged frames is full — wait for the \
                     receiver's answers",
                    c.window
                ),
                transient: true,
            });
        }
        let mut buf = c.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(msg);
        let mut p = Pending { txnr: 0, msg: buf };
        if c.state == State::Ready {
            p.txnr = c.take_txnr();
            write_frame(out, p.txnr, b"syslog", &p.msg);
            c.written = c.written.saturating_add(1);
        }
        c.unacked_bytes = c.unacked_bytes.saturating_add(p.msg.len());
        c.unacked.push_back(p);
        Ok(())
    }

    /// Ask the receiver to close the session. Only an open session can be closed.
    pub fn close(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let c = &mut self.core;
        if c.state != State::Ready {
            return Err(Error::Output {
                message: format!("relp session cannot be closed in state {:?}", c.state),
                transient: true,
            });
        }
        c.close_txnr = c.take_txnr();
        write_frame(out, c.close_txnr, b"close", b"");
        c.state = State::Closing;
        Ok(())
    }

    /// Take bytes the receiver sent. Acknowledgements free window slots; the answer to
    /// `open` makes the session ready and writes the unacknowledged events (to `out`).
    /// A refusal (`rsp` other than 200), `serverclose`, or anything not RELP is an error
    /// and leaves the session `Down`: the caller drops the connection and reconnects.
    pub fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let r = self.receive_inner(input, out);
        if r.is_err() {
            self.broken();
        }
        r
    }

    fn receive_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        match self.core.state {
            State::Down => {
                return Err(malformed(
                    "relp data arrived with no session open".to_owned(),
                ))
            }
            // After `close` was answered the receiver says `serverclose`: nothing to do.
            State::Closed => return Ok(()),
            _ => {}
        }
        let mut rest = input;
        while !rest.is_empty() {
            let (used, frame) = self.parser.next(rest)?;
            rest = rest.get(used..).unwrap_or_default();
            if let Some(f) = frame {
                self.core.handle(f, out)?;
                if self.core.state == State::Closed {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

impl Core {
    fn take_txnr(&mut self) -> u32 {
        let t = self.next_txnr;
        self.next_txnr = next_txnr(t);
        t
    }

    fn handle(&mut self, f: Frame<'_>, out: &mut Vec<u8>) -> Result<()> {
        if f.txnr == 0 {
            // Hints: the receiver is going away; any other hint is advisory and ignored.
            if f.command == b"serverclose" {
                return Err(Error::Output {
                    message: "the receiver closed the relp session (serverclose)".into(),
                    transient: true,
                });
            }
            return Ok(());
        }
        if f.command != b"rsp" {
            return Err(malformed(format!(
                "the receiver sent relp command {:?} (only rsp is expected)",
                shown(f.command)
            )));
        }
        let rsp = Rsp::parse(f.data)?;
        match self.state {
            State::Opening if f.txnr == self.open_txnr => self.opened(&rsp, out),
            State::Closing if f.txnr == self.close_txnr => {
                self.state = State::Closed;
                Ok(())
            }
            State::Ready | State::Closing => self.acked(f.txnr, &rsp),
            other => Err(malformed(format!(
                "the receiver answered transaction {} while the session is {other:?}",
                f.txnr
            ))),
        }
    }

    /// The answer to `open`: 200 with `relp_version` 0 and `syslog` among the commands.
    fn opened(&mut self, rsp: &Rsp<'_>, out: &mut Vec<u8>) -> Result<()> {
        if rsp.code != Some(200) {
            return Err(Error::Output {
                message: format!("the receiver refused the relp session: {}", rsp.describe()),
                transient: true,
            });
        }
        let mut version = None;
        let mut syslog = false;
        for line in rsp.data.split(|&b| b == b'\n') {
            let (name, values) = match line.iter().position(|&b| b == b'=') {
                Some(i) => (
                    line.get(..i).unwrap_or_default(),
                    line.get(i.saturating_add(1)..).unwrap_or_default(),
                ),
                None => (line, &b""[..]),
            };
            match name {
                b"relp_version" => version = Some(parse_number(values)),
                b"commands" => syslog = values.split(|&b| b == b',').any(|v| v == b"syslog"),
                _ => {}
            }
        }
        match version {
            Some(Some(RELP_VERSION)) => {}
            Some(Some(v)) => {
                return Err(Error::Output {
                    message: format!(
                        "the receiver speaks relp_version {v}; msgtrace speaks \
                         {RELP_VERSION} — use an rsyslog imrelp or librelp-compatible receiver"
                    ),
                    transient: false,
                })
            }
            _ => {
                return Err(Error::Output {
                    message: "the receiver's answer to relp open has no valid relp_version \
                              offer — is this port a RELP receiver (rsyslog imrelp)?"
                        .into(),
                    transient: false,
                })
            }
        }
        if !syslog {
            return Err(Error::Output {
                message: "the receiver does not accept the relp syslog command (not in its \
                          commands offer) — configure it to take syslog messages"
                    .into(),
                transient: false,
            });
        }
        self.state = State::Ready;
        // Everything still unacknowledged goes out again, renumbered on this session.
        let mut next = self.next_txnr;
        for p in &mut self.unacked {
            p.txnr = next;
            next = next_txnr(next);
            write_frame(out, p.txnr, b"syslog", &p.msg);
        }
        self.next_txnr = next;
        self.written = self.unacked.len();
        Ok(())
    }

    /// The answer to a `syslog` frame.
    fn acked(&mut self, txnr: u32, rsp: &Rsp<'_>) -> Result<()> {
        let in_flight = self.unacked.iter().take(self.written);
        let Some(pos) = in_flight.into_iter().position(|p| p.txnr == txnr) else {
            return Err(malformed(format!(
                "the receiver answered transaction {txnr}, which is not in flight"
            )));
        };
        if rsp.code != Some(200) {
            return Err(Error::Output {
                message: format!(
                    "the receiver refused an event (transaction {txnr}): {}",
                    rsp.describe()
                ),
                transient: true,
            });
        }
        // Receivers answer in order, so this is nearly always the front.
        if let Some(p) = self.unacked.remove(pos) {
            self.unacked_bytes = self.unacked_bytes.saturating_sub(p.msg.len());
            self.written = self.written.saturating_sub(1);
            self.spare.push(p.msg);
        }
        Ok(())
    }
}

/// A protocol violation by the receiver: reconnecting may help.
fn malformed(message: String) -> Error {
    Error::Output {
        message,
        transient: true,
    }
}

/// Bytes from the receiver made printable for a message, at most `TEXT_MAX` of them.
fn shown(b: &[u8]) -> String {
    let cut = b.get(..TEXT_MAX).unwrap_or(b);
    String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `NUMBER` of at most nine digits.
fn parse_number(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > usize::from(NUMBER_DIGITS) {
        return None;
    }
    b.iter().try_fold(0u32, |n, &d| {
        let digit = u32::from(d.checked_sub(b'0').filter(|x| *x <= 9)?);
        n.checked_mul(10)?.checked_add(digit)
    })
}

/// Append `TXNR SP COMMAND SP DATALEN [SP DATA] LF` to `out`.
fn write_frame(out: &mut Vec<u8>, txnr: u32, command: &[u8], data: &[u8]) {
    push_decimal(out, u64::from(txnr));
    out.push(b' ');
    out.extend_from_slice(command);
    out.push(b' ');
    push_decimal(out, data.len() as u64);
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// Decimal digits of `n` without the formatting machinery (this is per event).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i = i.saturating_sub(1);
        if let Some(d) = digits.get_mut(i) {
            // n % 10 < 10: the cast cannot truncate.
            *d = b'0'.saturating_add((n % 10) as u8);
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// The data of an `rsp`: `STATUS [SP HUMAN-TEXT] [LF DATA]`; empty for the answer to
/// `close`.
struct Rsp<'a> {
    code: Option<u16>,
    text: &'a [u8],
    data: &'a [u8],
}

impl<'a> Rsp<'a> {
    fn parse(b: &'a [u8]) -> Result<Rsp<'a>> {
        if b.is_empty() {
            return Ok(Rsp {
                code: None,
                text: b"",
                data: b"",
            });
        }
        let bad = || malformed(format!("the receiver sent a bad relp rsp {:?}", shown(b)));
        let code = b
            .get(..3)
            .and_then(parse_number)
            .and_then(|c| u16::try_from(c).ok())
            .ok_or_else(bad)?;
        let after = b.get(3..).unwrap_or_default();
        let (text, data) = match after.first() {
            None => (&b""[..], &b""[..]),
            // librelp writes `200 OK`, a bare status ends at LF or at the end.
            Some(b' ') | Some(b'\n') => {
                let body = after.get(1..).unwrap_or_default();
                if after.first() == Some(&b'\n') {
                    (&b""[..], body)
                } else {
                    match body.iter().position(|&c| c == b'\n') {
                        Some(i) => (
                            body.get(..i).unwrap_or_default(),
                            body.get(i.saturating_add(1)..).unwrap_or_default(),
                        ),
                        None => (body, &b""[..]),
                    }
                }
            }
            Some(_) => return Err(bad()),
        };
        Ok(Rsp {
            code: Some(code),
            text,
            data,
        })
    }

    fn describe(&self) -> String {
        match self.code {
            Some(c) if self.text.is_empty() => format!("rsp {c}"),
            Some(c) => format!("rsp {c} {}", shown(self.text)),
            None => "rsp without a status".into(),
        }
    }
}

/// A complete frame from the receiver, borrowing the parser's buffer.
struct Frame<'a> {
    txnr: u32,
    command: &'a [u8],
    data: &'a [u8],
}

/// Where the parser is inside a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Rx {
    #[default]
    Txnr,
    Command,
    Datalen,
    Data,
    Trailer,
}

/// Incremental frame parser: takes any split of the byte stream.
#[derive(Default)]
struct Parser {
    at: Rx,
    /// A frame was returned by the last call: start afresh.
    done: bool,
    digits: u8,
    txnr: u32,
    command: [u8; COMMAND_MAX],
    command_len: usize,
    len: usize,
    data: Vec<u8>,
}

impl Parser {
    /// Consume `input` up to the end of the first complete frame. Returns the bytes used
    /// and that frame, if one completed.
    fn next(&mut self, input: &[u8]) -> Result<(usize, Option<Frame<'_>>)> {
        if self.done {
            self.done = false;
            self.at = Rx::Txnr;
            self.digits = 0;
            self.txnr = 0;
            self.command_len = 0;
            self.len = 0;
            self.data.clear();
        }
        let bad = |what: &str| malformed(format!("the receiver sent a bad relp frame ({what})"));
        let mut i = 0usize;
        while let Some(&b) = input.get(i) {
            match self.at {
                Rx::Txnr | Rx::Datalen if b.is_ascii_digit() => {
                    if self.digits >= NUMBER_DIGITS {
                        return Err(bad("a number longer than nine digits"));
                    }
                    self.digits = self.digits.saturating_add(1);
                    let d = b.saturating_sub(b'0');
                    if self.at == Rx::Txnr {
                        // Nine digits fit in u32: checked for form's sake.
                        self.txnr = self
                            .txnr
                            .checked_mul(10)
                            .and_then(|n| n.checked_add(u32::from(d)))
                            .ok_or_else(|| bad("transaction number"))?;
                    } else {
                        self.len = self
                            .len
                            .checked_mul(10)
                            .and_then(|n| n.checked_add(usize::from(d)))
                            .ok_or_else(|| bad("data length"))?;
                    }
                }
                Rx::Txnr => {
                    if b != b' ' || self.digits == 0 {
                        return Err(bad("transaction number"));
                    }
                    self.at = Rx::Command;
                    self.digits = 0;
                }
                Rx::Command if b.is_ascii_alphabetic() => {
                    let slot = self
                        .command
                        .get_mut(self.command_len)
                        .ok_or_else(|| bad("a command longer than 32 letters"))?;
                    *slot = b;
                    self.command_len = self.command_len.saturating_add(1);
                }
                Rx::Command => {
                    if b != b' ' || self.command_len == 0 {
                        return Err(bad("command"));
                    }
                    self.at = Rx::Datalen;
                }
                Rx::Datalen => {
                    if self.digits == 0 {
                        return Err(bad("data length"));
                    }
                    if self.len == 0 {
                        // No data: this byte is the trailer.
                        self.at = Rx::Trailer;
                        continue;
                    }
                    if b != b' ' {
                        return Err(bad("data length"));
                    }
                    if self.len > RECEIVE_MAX {
                        return Err(malformed(format!(
                            "the receiver sent a relp frame of {} bytes, more than the limit \
                             of {RECEIVE_MAX}",
                            self.len
                        )));
                    }
                    self.at = Rx::Data;
                }
                Rx::Data => {
                    let want = self.len.saturating_sub(self.data.len());
                    let avail = input.len().saturating_sub(i);
                    let take = want.min(avail);
                    let end = i.saturating_add(take);
                    self.data
                        .extend_from_slice(input.get(i..end).unwrap_or_default());
                    i = end;
                    if self.data.len() >= self.len {
                        self.at = Rx::Trailer;
                    }
                    continue;
                }
                Rx::Trailer => {
                    if b != b'\n' {
                        return Err(bad("no LF after the data"));
                    }
                    self.done = true;
                    let frame = Frame {
                        txnr: self.txnr,
                        command: self.command.get(..self.command_len).unwrap_or_default(),
                        data: &self.data,
                    };
                    return Ok((i.saturating_add(1), Some(frame)));
                }
            }
            i = i.saturating_add(1);
        }
        Ok((input.len(), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// imrelp's answer to `open`, as librelp 1.11 writes it (copen.c: `200 OK` LF offers).
    const OPEN_OK: &[u8] = b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n";

    fn open_ok() -> Vec<u8> {
        OPEN_OK.to_vec()
    }

    fn ready() -> (Session, Vec<u8>) {
        let mut s = Session::default();
        let mut out = Vec::new();
        s.connect(&mut out);
        out.clear();
        s.receive(&open_ok(), &mut out).unwrap();
        assert_eq!(s.state(), State::Ready);
        (s, out)
    }

    fn rsp(txnr: u32, text: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_frame(&mut v, txnr, b"rsp", text);
        v
    }

    #[test]
    fn open_carries_the_offers_librelp_expects() {
        let mut s = Session::default();
        let mut out = Vec::new();
        s.connect(&mut out);
        let text = String::from_utf8(out).unwrap();
        let data = format!(
            "relp_version=0\nrelp_software=msgtrace,{}{}\ncommands=syslog",
            env!("CARGO_PKG_VERSION"),
            if env!("CARGO_PKG_REPOSITORY").is_empty() {
                String::new()
            } else {
                format!(",{}", env!("CARGO_PKG_REPOSITORY"))
            }
        );
        assert_eq!(text, format!("1 open {} {data}\n", data.len()));
        assert_eq!(s.state(), State::Opening);
    }

    #[test]
    fn syslog_frames_and_acks() {
        let (mut s, mut out) = ready();
        s.send(b"<14>1 x", &mut out).unwrap();
        s.send(b"", &mut out).unwrap();
        assert_eq!(out, b"2 syslog 7 <14>1 x\n3 syslog 0\n");
        assert_eq!((s.unacked(), s.unacked_bytes()), (2, 7));
        s.receive(&rsp(2, b"200 OK"), &mut out).unwrap();
        assert_eq!(s.unacked(), 1);
        s.receive(&rsp(3, b"200"), &mut out).unwrap();
        assert!(s.all_acked());
        assert_eq!(s.unacked_bytes(), 0);
    }

    #[test]
    fn every_split_point_of_the_answers_is_handled() {
        // The open answer, two acks and an unknown hint, cut at every position.
        let mut stream = open_ok();
        stream.extend_from_slice(&rsp(2, b"200 OK"));
        stream.extend_from_slice(b"0 hint 0\n");
        stream.extend_from_slice(&rsp(3, b"200 OK"));
        for cut in 0..=stream.len() {
            for cut2 in cut..=stream.len() {
                let mut s = Session::default();
                let mut out = Vec::new();
                s.connect(&mut out);
                s.send(b"a", &mut out).unwrap();
                s.send(b"b", &mut out).unwrap();
                out.clear();
                s.receive(&stream[..cut], &mut out).unwrap();
                s.receive(&stream[cut..cut2], &mut out).unwrap();
                s.receive(&stream[cut2..], &mut out).unwrap();
                assert_eq!(s.state(), State::Ready, "{cut}/{cut2}");
                assert!(s.all_acked(), "{cut}/{cut2}");
                assert_eq!(out, b"2 syslog 1 a\n3 syslog 1 b\n", "{cut}/{cut2}");
            }
        }
    }

    #[test]
    fn byte_by_byte_is_the_same_as_at_once() {
        let (mut s, mut out) = ready();
        for _ in 0..5 {
            s.send(b"m", &mut out).unwrap();
        }
        let mut acks = Vec::new();
        for t in 2..7 {
            acks.extend_from_slice(&rsp(t, b"200 OK"));
        }
        for b in &acks {
            s.receive(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert!(s.all_acked());
    }

    #[test]
    fn messages_sent_before_the_session_opens_go_out_when_it_does() {
        let mut s = Session::default();
        let mut out = Vec::new();
        s.send(b"early", &mut out).unwrap();
        assert!(out.is_empty());
        s.connect(&mut out);
        out.clear();
        s.receive(&open_ok(), &mut out).unwrap();
        assert_eq!(out, b"2 syslog 5 early\n");
    }

    #[test]
    fn a_broken_session_resends_every_unacknowledged_frame_renumbered() {
        let (mut s, mut out) = ready();
        for m in [&b"a"[..], b"b", b"c", b"d"] {
            s.send(m, &mut out).unwrap();
        }
        s.receive(&rsp(2, b"200 OK"), &mut out).unwrap();
        s.receive(&rsp(4, b"200 OK"), &mut out).unwrap(); // out of order is fine
        s.broken();
        assert_eq!(s.unacked(), 2);
        s.send(b"e", &mut out).unwrap(); // queued while down
        out.clear();
        s.connect(&mut out);
        assert!(out.starts_with(b"1 open "));
        out.clear();
        s.receive(&open_ok(), &mut out).unwrap();
        assert_eq!(out, b"2 syslog 1 b\n3 syslog 1 d\n4 syslog 1 e\n");
        out.clear();
        s.send(b"f", &mut out).unwrap();
        assert_eq!(out, b"5 syslog 1 f\n");
    }

    #[test]
    fn a_500_leaves_the_frame_for_the_next_session() {
        let (mut s, mut out) = ready();
        s.send(b"a", &mut out).unwrap();
        s.send(b"b", &mut out).unwrap();
        s.receive(&rsp(2, b"200 OK"), &mut out).unwrap();
        let e = s.receive(&rsp(3, b"500 queue full"), &mut out).unwrap_err();
        assert!(e.is_transient());
        assert!(e.to_string().contains("rsp 500 queue full"), "{e}");
        assert_eq!(s.state(), State::Down);
        assert_eq!(s.unacked(), 1);
        out.clear();
        s.connect(&mut out);
        out.clear();
        s.receive(&open_ok(), &mut out).unwrap();
        assert_eq!(out, b"2 syslog 1 b\n");
    }

    #[test]
    fn serverclose_breaks_the_session() {
        let (mut s, mut out) = ready();
        s.send(b"a", &mut out).unwrap();
        let e = s.receive(b"0 serverclose 0\n", &mut out).unwrap_err();
        assert!(
            e.is_transient() && e.to_string().contains("serverclose"),
            "{e}"
        );
        assert_eq!((s.state(), s.unacked()), (State::Down, 1));
    }

    #[test]
    fn transaction_numbers_wrap_to_one() {
        assert_eq!(next_txnr(1), 2);
        assert_eq!(next_txnr(TXNR_MAX - 1), TXNR_MAX);
        assert_eq!(next_txnr(TXNR_MAX), 1);
        let (mut s, mut out) = ready();
        s.core.next_txnr = TXNR_MAX;
        out.clear();
        s.send(b"x", &mut out).unwrap();
        s.send(b"y", &mut out).unwrap();
        assert_eq!(out, b"999999999 syslog 1 x\n1 syslog 1 y\n");
        s.receive(&rsp(TXNR_MAX, b"200 OK"), &mut out).unwrap();
        s.receive(&rsp(1, b"200 OK"), &mut out).unwrap();
        assert!(s.all_acked());
    }

    #[test]
    fn the_window_bounds_what_is_in_flight() {
        let (mut s, mut out) = ready();
        for _ in 0..WINDOW {
            assert!(s.has_room());
            s.send(b"m", &mut out).unwrap();
        }
        assert!(!s.has_room());
        assert!(s.send(b"m", &mut out).unwrap_err().is_transient());
        s.receive(&rsp(2, b"200 OK"), &mut out).unwrap();
        assert!(s.has_room());
    }

    #[test]
    fn an_event_over_the_limit_is_an_error_naming_it() {
        let (mut s, mut out) = ready();
        let big = vec![b'x'; MAX_DATA + 1];
        let e = s.send(&big, &mut out).unwrap_err();
        assert!(!e.is_transient());
        assert!(e.to_string().contains("131072"), "{e}");
        s.send(&big[..MAX_DATA], &mut out).unwrap();
        assert_eq!(s.unacked(), 1);
    }

    #[test]
    fn close_and_its_empty_answer() {
        let (mut s, mut out) = ready();
        out.clear();
        s.close(&mut out).unwrap();
        assert_eq!(out, b"2 close 0\n");
        // imrelp answers `close` with an empty rsp, then says `serverclose`.
        s.receive(b"2 rsp 0\n0 serverclose 0\n", &mut out).unwrap();
        assert_eq!(s.state(), State::Closed);
        assert!(Session::default().close(&mut out).is_err());
    }

    #[test]
    fn open_answers_that_cannot_be_used_are_refused() {
        let cases: &[(&[u8], bool, &str)] = &[
            (
                b"500 required command not supported by client",
                true,
                "refused the relp session",
            ),
            (b"200 OK\ncommands=syslog", false, "relp_version"),
            (
                b"200 OK\nrelp_version=x\ncommands=syslog",
                false,
                "relp_version",
            ),
            (
                b"200 OK\nrelp_version=1\ncommands=syslog",
                false,
                "relp_version 1",
            ),
            (
                b"200 OK\nrelp_version=0\ncommands=",
                false,
                "syslog command",
            ),
            (b"200 OK\nrelp_version=0", false, "syslog command"),
        ];
        for (data, transient, want) in cases {
            let mut s = Session::default();
            let mut out = Vec::new();
            s.connect(&mut out);
            let e = s.receive(&rsp(1, data), &mut out).unwrap_err();
            assert_eq!(e.is_transient(), *transient, "{e}");
            assert!(e.to_string().contains(want), "{e}");
            assert_eq!(s.state(), State::Down);
        }
        // A bare `200` with offers right after the LF is fine.
        let mut s = Session::default();
        let mut out = Vec::new();
        s.connect(&mut out);
        s.receive(
            &rsp(1, b"200\nrelp_version=0\ncommands=eventlog,syslog"),
            &mut out,
        )
        .unwrap();
        assert_eq!(s.state(), State::Ready);
    }

    #[test]
    fn protocol_violations_are_errors() {
        let bad: &[&[u8]] = &[
            b"x rsp 0\n",
            b" 2 rsp 0\n",
            b"1234567890 rsp 0\n",
            b"2 r5p 0\n",
            b"2 rsp x\n",
            b"2 rsp 0x",
            b"2 rsp 6 200 OKx",
            b"2 rsp 2 OK\n",
            b"2 rsp 3 20x\n",
            b"2 rsp 4 200x\n",
            b"2 rsp 1234567890 ",
            b"2 rsp 999999 ",
            b"2 syslog 0\n",
            b"9 rsp 3 200\n",
            b"2 rsp 0\n",
            b"2 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 0\n",
        ];
        for input in bad {
            let (mut s, mut out) = ready();
            s.send(b"m", &mut out).unwrap();
            let r = s.receive(input, &mut out);
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(input));
            assert_eq!(s.state(), State::Down);
            assert_eq!(s.unacked(), 1);
        }
        let mut s = Session::default();
        assert!(s.receive(b"1 rsp 0\n", &mut Vec::new()).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic byte soup around valid frames.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for round in 0..2000 {
            let (mut s, mut out) = ready();
            s.send(b"m", &mut out).unwrap();
            let mut input = rsp(2, b"200 OK");
            for _ in 0..(round % 64) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                input.push(b"0123456789 rspyslog\n"[(x % 20) as usize]);
            }
            let _ = s.receive(&input, &mut out);
        }
    }

    #[test]
    fn numbers_are_written_and_read_exactly() {
        for n in [0u64, 7, 10, 128, 999_999_999, u64::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(v, n.to_string().into_bytes());
        }
        assert_eq!(parse_number(b"999999999"), Some(999_999_999));
        assert_eq!(parse_number(b"1234567890"), None);
        assert_eq!(parse_number(b""), None);
        assert_eq!(parse_number(b"1a"), None);
    }
}
