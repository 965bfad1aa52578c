//! Socket IO under a link: writing TLS records, reading what the receiver sends
//! (plaintext out of TLS, or plain TCP) with a deadline, and the send queue the peer's
//! TCP has not acknowledged yet (SIOCOUTQ). Split out of `tls.rs`, which owns the
//! connection state machine. Must not: decide when to reconnect or what a byte means.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rustls::ClientConnection;

use super::tls::{Conn, INBOX_MAX, READ_SCRATCH, READ_WAIT_MIN};

pub(super) fn write_tls_all(tls: &mut ClientConnection, sock: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        tls.write_tls(sock)?;
    }
    Ok(())
}

pub(super) fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "closed")
}

/// One read from the socket. TCP: the bytes land in `plain` (their count is returned).
/// TLS: the records go into rustls and are processed (0 is returned; the plaintext is
/// taken with `read_plain`). A socket at EOF is an `UnexpectedEof` error.
pub(super) fn read_once(conn: &mut Conn, plain: &mut [u8]) -> io::Result<usize> {
    let n = match conn.tls.as_mut() {
        Some(tls) => tls.read_tls(&mut conn.sock)?,
        None => conn.sock.read(plain)?,
    };
    if n == 0 {
        return Err(closed());
    }
    match conn.tls.as_mut() {
        Some(tls) => {
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            Ok(0)
        }
        None => Ok(n),
    }
}

/// Plaintext rustls holds: `None` when there is none yet; `UnexpectedEof` when the
/// receiver closed the session (close_notify) and nothing is left.
pub(super) fn read_plain(tls: &mut ClientConnection, buf: &mut [u8]) -> io::Result<Option<usize>> {
    match tls.reader().read(buf) {
        Ok(0) => Err(closed()),
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Read what the peer sent without blocking (the socket is non-blocking here).
/// Ok when nothing is there; an `UnexpectedEof` error when the peer closed. Received
/// plaintext goes to the inbox when `keep` (until it holds about `INBOX_MAX` bytes:
/// then the socket is left unread), else it is discarded.
pub(super) fn peek_peer(conn: &mut Conn, keep: bool) -> io::Result<()> {
    let mut scratch = [0u8; READ_SCRATCH];
    loop {
        if keep && conn.inbox.len() >= INBOX_MAX {
            return Ok(());
        }
        match read_once(conn, &mut scratch) {
            Ok(n) => {
                if keep {
                    conn.inbox.extend(scratch.get(..n).unwrap_or_default());
                }
                if let Some(tls) = conn.tls.as_mut() {
                    while let Some(k) = read_plain(tls, &mut scratch)? {
                        if keep {
                            conn.inbox.extend(scratch.get(..k).unwrap_or_default());
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `read_available` on an established connection: inbox first, then the socket with
/// a read timeout up to `deadline` (restored to `io_timeout` after).
pub(super) fn read_into(
    conn: &mut Conn,
    buf: &mut [u8],
    deadline: Instant,
    io_timeout: Duration,
) -> io::Result<usize> {
    if !conn.inbox.is_empty() {
        let n = buf.len().min(conn.inbox.len());
        for (dst, src) in buf.iter_mut().zip(conn.inbox.drain(..n)) {
            *dst = src;
        }
        return Ok(n);
    }
    let r = read_socket(conn, buf, deadline);
    let _ = conn.sock.set_read_timeout(Some(io_timeout));
    r
}

pub(super) fn read_socket(conn: &mut Conn, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    loop {
        if let Some(tls) = conn.tls.as_mut() {
            if let Some(n) = read_plain(tls, buf)? {
                return Ok(n);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(0);
        }
        conn.sock.set_read_timeout(Some(left.max(READ_WAIT_MIN)))?;
        match read_once(conn, buf) {
            // TLS records were processed: their plaintext is taken at the loop's top.
            Ok(0) => {}
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Bytes in the socket's send queue that the peer's TCP has not acknowledged yet
/// (unsent + unacknowledged). std has no API for this, so libc's ioctl is used:
/// SIOCOUTQ (equal to TIOCOUTQ on Linux) on a TCP socket returns `write_seq - snd_una`.
#[cfg(target_os = "linux")]
pub(super) fn unacked_bytes(sock: &TcpStream) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut pending: libc::c_int = 0;
    // SAFETY: the fd is an open socket owned by `sock` for the whole call, and
    // TIOCOUTQ writes exactly one c_int through the pointer.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut pending) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(pending).unwrap_or(0))
}

/// Elsewhere the queue cannot be read: a flushed write counts as delivered.
#[cfg(not(target_os = "linux"))]
pub(super) fn unacked_bytes(_sock: &TcpStream) -> io::Result<u64> {
    Ok(0)
}
