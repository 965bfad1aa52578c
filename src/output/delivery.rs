//! Delivery: the fan-out of encoded events to every output, one writer thread per
//! output, and the page confirmations the puller waits for. No lock is held across
//! network or disk IO: a slow or hung receiver delays only the pages that must wait for
//! it, never the statistics, the other outputs' writers or a worker checking readiness.
//!
//! How a page travels. A worker opens a `Page` (`Delivery::page`), which notes each
//! output's epoch; `Page::write` hands each encoded batch (one shared buffer) to every
//! output's bounded queue, numbered per output (its sequence number); `Page::confirm`
//! waits until each output confirmed every batch up to the page's last one in the same
//! epoch. An output's writer thread owns its `Sink`: it connects when a worker asks
//! (`ensure_ready`), writes batches in order, and when someone waits it calls
//! `Sink::confirm` once for everything written so far (one confirm serves every waiting
//! page). The epoch moves at every connect and every failure; a batch of an older epoch
//! is not written, and a page whose epoch moved is not confirmed — the puller pulls it
//! again (at-least-once), as it does when an output is down.
//!
//! The sink interface (`super::Sink`) this relies on: `ensure_ready` connects (bounded);
//! `write_events` may buffer; `confirm(N)` returns Ok only when the receiver has taken
//! every event written before it — proven by a drained send queue (devo_platform,
//! syslog: `tls::Link::confirm`), an fsync (file), a flush (stdout) or application
//! acknowledgements (RELP: push, then read `rsp 200` for every open transaction through
//! `tls::Link::read_available`, then `tls::Link::confirmed`); any error means "not
//! taken" and the sink may drop its connection; `generation` moves at every reconnect
//! that may have lost events (a sink that resends everything unacknowledged by itself
//! keeps it). A sink may block in any call up to its own timeouts: only its writer
//! thread waits. Building blocks for an acknowledging sink over TLS or TCP:
//! `tls::Link::keep_received` (keep the receiver's answers), `without_replay` (the
//! protocol resends itself), `read_available` (answers, with a deadline), `confirmed`.
//!
//! Memory is bounded: at most `LANE_BYTES` queued per output (a worker waits for room);
//! the sink's own buffers are bounded by the sink.
//!
//! Must not: hold a lock while a sink does IO, sleep between reconnects (run.rs's
//! backoff decides when a worker asks again), pull, or move a cursor.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Sink, SinkStats};
use crate::error::{Error, Result};
use crate::{info, warning};

/// Most encoded bytes queued per output: about four batches. A worker that finds the
/// queue full waits for its writer (back-pressure), so memory does not grow with a slow
/// receiver.
pub const LANE_BYTES: usize = 512 * 1024;
/// Longest a worker waits in `ensure_ready` for a connect attempt it asked for. A
/// healthy receiver answers well within (TCP + TLS handshake + the TLS 1.3 verdict
/// probe of at most 2 s); a receiver that does not is reported down, and the writer
/// goes on trying in the background up to its own connect timeout.
pub const READY_WAIT: Duration = Duration::from_secs(3);
/// Longest `Drop` waits for the writers to close their connections (close_notify).
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Stack of a writer thread (the sinks do not recurse; rustls needs little).
const WRITER_STACK: usize = 256 * 1024;
const COMP: &str = "OutputProcess::OutputSender";

/// One encoded batch on its way to one output.
struct Batch {
    seq: u64,
    /// The epoch of the page that wrote it: written only if still current.
    epoch: u64,
    lines: Arc<[u8]>,
    count: u64,
    stream: super::Stream,
}

/// The state of one output shared between its writer and the workers. Held only for
/// bookkeeping, never during IO.
#[derive(Default)]
struct LaneState {
    queue: VecDeque<Batch>,
    queued_bytes: usize,
    /// Sequence number of the next batch.
    next_seq: u64,
    /// Batches below this sequence number were taken by the writer.
    taken: u64,
    /// Batches below this sequence number were confirmed, in epoch `confirmed_in`.
    confirmed: u64,
    confirmed_in: u64,
    /// A page waits for the batches below this to be confirmed.
    want_confirm: u64,
    /// Moves at every connect and every failure (only the writer moves it).
    epoch: u64,
    up: bool,
    want_connect: bool,
    connecting: bool,
    /// Connect attempts finished.
    attempts: u64,
    last_error: Option<String>,
    /// A refusal that reconnecting will not heal (certificate rejected, …).
    permanent: Option<String>,
    stop: bool,
    exited: bool,
}

/// One output: its shared state, and statistics readable without any lock.
struct Lane {
    name: String,
    state: Mutex<LaneState>,
    cv: Condvar,
    sent_total: AtomicU64,
    connected: AtomicBool,
    /// The sink's own queue (buffer + unacknowledged), as of its last operation.
    sink_queued: AtomicU64,
    /// Bytes waiting in this lane's queue.
    lane_queued: AtomicU64,
}

/// What the writer does next.
enum Job {
    Connect,
    Write(Batch, bool),
    Confirm(u64),
    Stop,
}

/// Every output, each behind its own writer thread.
pub struct Delivery {
    lanes: Vec<Arc<Lane>>,
    writers: Vec<JoinHandle<()>>,
    /// "pulling paused" was logged and "resumes" not yet.
    paused: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn u64_of(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Lane {
    fn wait<'a>(&self, g: MutexGuard<'a, LaneState>) -> MutexGuard<'a, LaneState> {
        self.cv.wait(g).unwrap_or_else(|p| p.into_inner())
    }

    fn wait_until<'a>(
        &self,
        g: MutexGuard<'a, LaneState>,
        deadline: Instant,
    ) -> MutexGuard<'a, LaneState> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.cv
            .wait_timeout(g, left)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    fn error(&self, st: &LaneState) -> Error {
        if let Some(p) = &st.permanent {
            return Error::Output {
                message: p.clone(),
                transient: false,
            };
        }
        let message = match (&st.last_error, st.stop) {
            (_, true) => format!("output {}: shutting down", self.name),
            (Some(e), false) => e.clone(),
            (None, false) => format!("output {}: not connected yet", self.name),
        };
        Error::Output {
            message,
            transient: true,
        }
    }

    /// Ask the writer to connect unless up; wait at most `READY_WAIT` for the attempt.
    fn ready(&self) -> Result<()> {
        let mut st = lock(&self.state);
        if st.up && st.permanent.is_none() {
            return Ok(());
        }
        if st.permanent.is_some() || st.stop {
            return Err(self.error(&st));
        }
        let attempts0 = st.attempts;
        if !st.connecting && !st.want_connect {
            st.want_connect = true;
            self.cv.notify_all();
        }
        let deadline = Instant::now().checked_add(READY_WAIT);
        while !st.up && st.attempts == attempts0 && !st.stop {
            let Some(d) = deadline.filter(|d| Instant::now() < *d) else {
                break;
            };
            st = self.wait_until(st, d);
        }
        if st.up && st.permanent.is_none() {
            Ok(())
        } else {
            Err(self.error(&st))
        }
    }

    /// The writer's bookkeeping after the sink failed: down, new epoch. Only a refused
    /// connect can be permanent; a failed write or confirm is retried by reconnecting
    /// (which then says whether the refusal is permanent).
    fn went_down(&self, st: &mut LaneState, e: &Error) {
        if st.up {
            st.epoch = st.epoch.wrapping_add(1);
        }
        st.up = false;
        st.last_error = Some(e.to_string());
    }

    fn note_stats(&self, sink: &dyn Sink, up: bool) {
        let s = sink.stats();
        self.sent_total.store(s.sent_total, Ordering::Relaxed);
        self.sink_queued.store(s.queued_bytes, Ordering::Relaxed);
        self.connected.store(up && s.connected, Ordering::Relaxed);
    }

    fn next_job(&self) -> Job {
        let mut st = lock(&self.state);
        loop {
            if st.stop {
                return Job::Stop;
            }
            if st.want_connect {
                st.want_connect = false;
                if !st.up {
                    st.connecting = true;
                    return Job::Connect;
                }
            }
            if let Some(b) = st.queue.pop_front() {
                st.queued_bytes = st.queued_bytes.saturating_sub(b.lines.len());
                self.lane_queued
                    .store(u64_of(st.queued_bytes), Ordering::Relaxed);
                st.taken = b.seq.saturating_add(1);
                // Room for a worker waiting to queue.
                self.cv.notify_all();
                let current = st.up && b.epoch == st.epoch;
                return Job::Write(b, current);
            }
            if st.up && st.want_confirm > st.confirmed {
                return Job::Confirm(st.taken);
            }
            st = self.wait(st);
        }
    }

    /// The writer: owns the sink, does every IO of this output.
    fn run(&self, mut sink: Box<dyn Sink>) {
        let mut generation = sink.generation();
        loop {
            match self.next_job() {
                Job::Stop => break,
                Job::Connect => {
                    let r = sink.ensure_ready();
                    let g = sink.generation();
                    let mut st = lock(&self.state);
                    st.connecting = false;
                    st.attempts = st.attempts.wrapping_add(1);
                    match r {
                        Ok(()) => {
                            st.epoch = st.epoch.wrapping_add(1);
                            st.up = true;
                            st.last_error = None;
                        }
                        Err(e) => {
                            self.went_down(&mut st, &e);
                            if !e.is_transient() {
                                st.permanent = Some(e.to_string());
                            }
                        }
                    }
                    generation = g;
                    self.note_stats(sink.as_ref(), st.up);
                    self.cv.notify_all();
                }
                Job::Write(b, current) => {
                    if !current {
                        // Its page is lost already (older connection): pulled again.
                        continue;
                    }
                    sink.set_stream(b.stream);
                    let r = sink.write_events(&b.lines, b.count);
                    let g = sink.generation();
                    let mut st = lock(&self.state);
                    if let Err(e) = r {
                        self.went_down(&mut st, &e);
                    } else if g != generation && st.up {
                        // The sink reconnected by itself: earlier batches may be lost.
                        st.epoch = st.epoch.wrapping_add(1);
                    }
                    generation = g;
                    self.note_stats(sink.as_ref(), st.up);
                    self.cv.notify_all();
                }
                Job::Confirm(upto) => {
                    let r = sink.confirm();
                    let g = sink.generation();
                    let mut st = lock(&self.state);
                    match r {
                        Err(e) => self.went_down(&mut st, &e),
                        Ok(()) if g != generation => {
                            st.epoch = st.epoch.wrapping_add(1);
                        }
                        Ok(()) => {
                            st.confirmed = st.confirmed.max(upto);
                            st.confirmed_in = st.epoch;
                        }
                    }
                    generation = g;
                    self.note_stats(sink.as_ref(), st.up);
                    self.cv.notify_all();
                }
            }
        }
        // Closing the connection (TLS close_notify) is bounded by the sink.
        drop(sink);
        let mut st = lock(&self.state);
        st.exited = true;
        st.up = false;
        self.connected.store(false, Ordering::Relaxed);
        self.cv.notify_all();
    }
}

impl Delivery {
    /// Start one writer thread per sink. Nothing connects yet: the first
    /// `ensure_ready` asks the writers to.
    pub fn start(sinks: Vec<Box<dyn Sink>>) -> Result<Delivery> {
        let mut d = Delivery {
            lanes: Vec::with_capacity(sinks.len()),
            writers: Vec::with_capacity(sinks.len()),
            paused: AtomicBool::new(false),
        };
        for sink in sinks {
            let lane = Arc::new(Lane {
                name: sink.name().to_owned(),
                state: Mutex::new(LaneState::default()),
                cv: Condvar::new(),
                sent_total: AtomicU64::new(0),
                connected: AtomicBool::new(false),
                sink_queued: AtomicU64::new(0),
                lane_queued: AtomicU64::new(0),
            });
            lane.note_stats(sink.as_ref(), false);
            let l = Arc::clone(&lane);
            let h = std::thread::Builder::new()
                .name(format!("output-{}", lane.name))
                .stack_size(WRITER_STACK)
                .spawn(move || l.run(sink))
                .map_err(|e| Error::Output {
                    message: format!(
                        "output {}: cannot start its writer thread: {e} — raise the \
                         process's thread limit",
                        lane.name
                    ),
                    transient: false,
                })?;
            d.lanes.push(lane);
            d.writers.push(h);
        }
        Ok(d)
    }

    /// Every output connected? Asks a writer whose output is down to connect and waits
    /// at most `READY_WAIT` for it: while an output is down pulling pauses (the caller
    /// retries with its backoff). Logs the pause and the resumption once each.
    pub fn ensure_ready(&self) -> Result<()> {
        for lane in &self.lanes {
            if let Err(e) = lane.ready() {
                if !self.paused.swap(true, Ordering::SeqCst) {
                    warning!(
                        COMP,
                        "output {} is not available, pulling paused: {e}",
                        lane.name
                    );
                }
                return Err(e);
            }
        }
        if self.paused.swap(false, Ordering::SeqCst) {
            info!(COMP, "all outputs available again, pulling resumes");
        }
        Ok(())
    }

    /// Start delivering one page of message trace rows.
    pub fn page(&self) -> Page<'_> {
        self.page_of(super::Stream::Trace)
    }

    /// Start delivering one page of `stream`'s events (their own tag).
    pub fn page_of(&self, stream: super::Stream) -> Page<'_> {
        let marks = self
            .lanes
            .iter()
            .map(|lane| {
                let st = lock(&lane.state);
                Mark {
                    epoch: st.epoch,
                    up: st.up && st.permanent.is_none(),
                    last: None,
                }
            })
            .collect();
        Page {
            delivery: self,
            marks,
            stream,
        }
    }

    /// Per output: messages sent, connected, bytes queued (here and in the sink). Reads
    /// atomics only: answers at once whatever the receivers do.
    pub fn stats(&self) -> Vec<(String, SinkStats)> {
        self.lanes
            .iter()
            .map(|l| {
                (
                    l.name.clone(),
                    SinkStats {
                        sent_total: l.sent_total.load(Ordering::Relaxed),
                        connected: l.connected.load(Ordering::Relaxed),
                        queued_bytes: l
                            .sink_queued
                            .load(Ordering::Relaxed)
                            .saturating_add(l.lane_queued.load(Ordering::Relaxed)),
                    },
                )
            })
            .collect()
    }
}

impl Drop for Delivery {
    /// Stop the writers and let them close their connections, waiting at most
    /// `CLOSE_WAIT` in all (a writer stuck in a blocked write is left behind).
    fn drop(&mut self) {
        for lane in &self.lanes {
            lock(&lane.state).stop = true;
            lane.cv.notify_all();
        }
        let deadline = Instant::now().checked_add(CLOSE_WAIT);
        for lane in &self.lanes {
            let mut st = lock(&lane.state);
            while !st.exited {
                let Some(d) = deadline.filter(|d| Instant::now() < *d) else {
                    break;
                };
                st = lane.wait_until(st, d);
            }
        }
        for h in std::mem::take(&mut self.writers) {
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

/// A page's position in one output.
struct Mark {
    epoch: u64,
    /// The output was up when the page began.
    up: bool,
    /// Sequence number of the page's last batch in this output.
    last: Option<u64>,
}

/// One page on its way to every output: `write` its batches, then `confirm`.
pub struct Page<'a> {
    delivery: &'a Delivery,
    marks: Vec<Mark>,
    stream: super::Stream,
}

impl Page<'_> {
    /// Queue a batch of JSON lines (`count` events) for every output. Waits while an
    /// output's queue is full; fails at once when an output failed since the page began.
    pub fn write(&mut self, lines: &[u8], count: u64) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        // A page begun while an output was down goes nowhere (it is pulled again).
        let mut lanes = self.delivery.lanes.iter().zip(&self.marks);
        if let Some((lane, _)) = lanes.find(|(_, m)| !m.up) {
            return Err(lost(lane, &lock(&lane.state)));
        }
        let shared: Arc<[u8]> = Arc::from(lines);
        for (lane, mark) in self.delivery.lanes.iter().zip(self.marks.iter_mut()) {
            let mut st = lock(&lane.state);
            loop {
                if !mark.up || st.epoch != mark.epoch || st.stop || st.permanent.is_some() {
                    return Err(lost(lane, &st));
                }
                let total = st.queued_bytes.saturating_add(shared.len());
                if st.queued_bytes == 0 || total <= LANE_BYTES {
                    break;
                }
                st = lane.wait(st);
            }
            let seq = st.next_seq;
            st.next_seq = seq.wrapping_add(1);
            st.queued_bytes = st.queued_bytes.saturating_add(shared.len());
            lane.lane_queued
                .store(u64_of(st.queued_bytes), Ordering::Relaxed);
            st.queue.push_back(Batch {
                seq,
                epoch: mark.epoch,
                lines: Arc::clone(&shared),
                count,
                stream: self.stream,
            });
            mark.last = Some(seq);
            lane.cv.notify_all();
        }
        Ok(())
    }

    /// Wait until every output confirmed every batch of this page (each output's
    /// writer confirms for all pages waiting on it at once). An output that failed or
    /// reconnected since the page began fails the page: it is pulled again.
    pub fn confirm(self) -> Result<()> {
        let lanes = &self.delivery.lanes;
        for (lane, mark) in lanes.iter().zip(&self.marks) {
            if let Some(last) = mark.last {
                let mut st = lock(&lane.state);
                st.want_confirm = st.want_confirm.max(last.saturating_add(1));
                lane.cv.notify_all();
            }
        }
        for (lane, mark) in lanes.iter().zip(&self.marks) {
            let mut st = lock(&lane.state);
            loop {
                let done = match mark.last {
                    // Confirmed in its own epoch: a failure after that does not undo it.
                    Some(l) => st.confirmed > l && st.confirmed_in == mark.epoch,
                    // Nothing written here: the output only had to stay up.
                    None => mark.up && st.epoch == mark.epoch,
                };
                if done {
                    break;
                }
                if !mark.up || st.epoch != mark.epoch || st.stop || st.permanent.is_some() {
                    return Err(lost(lane, &st));
                }
                st = lane.wait(st);
            }
        }
        Ok(())
    }
}

/// The error of a page an output could not take.
fn lost(lane: &Lane, st: &LaneState) -> Error {
    if !st.up || st.stop || st.permanent.is_some() {
        return lane.error(st);
    }
    Error::Output {
        message: format!("output {}: reconnected during the page", lane.name),
        transient: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a fake sink does and saw.
    #[derive(Default)]
    struct Script {
        refuse: Option<bool>,
        fail_write: bool,
        fail_confirm: bool,
        block_confirm: bool,
        confirming: bool,
        written: Vec<u8>,
        confirms: usize,
        generation: u64,
        connected: bool,
    }

    struct Fake {
        name: String,
        s: Arc<Mutex<Script>>,
    }

    impl Sink for Fake {
        fn name(&self) -> &str {
            &self.name
        }
        fn ensure_ready(&mut self) -> Result<()> {
            let mut s = lock(&self.s);
            match s.refuse {
                Some(transient) => Err(Error::Output {
                    message: format!("output {}: refused", self.name),
                    transient,
                }),
                None => {
                    if !s.connected {
                        s.connected = true;
                        s.generation += 1;
                    }
                    Ok(())
                }
            }
        }
        fn write_events(&mut self, json_lines: &[u8], _count: u64) -> Result<()> {
            let mut s = lock(&self.s);
            if s.fail_write || !s.connected {
                s.connected = false;
                return Err(Error::Output {
                    message: "write failed".into(),
                    transient: true,
                });
            }
            s.written.extend_from_slice(json_lines);
            Ok(())
        }
        fn confirm(&mut self) -> Result<()> {
            lock(&self.s).confirming = true;
            while lock(&self.s).block_confirm {
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut s = lock(&self.s);
            s.confirms += 1;
            if s.fail_confirm {
                s.connected = false;
                return Err(Error::Output {
                    message: "confirm failed".into(),
                    transient: true,
                });
            }
            Ok(())
        }
        fn generation(&self) -> u64 {
            lock(&self.s).generation
        }
        fn stats(&self) -> SinkStats {
            let s = lock(&self.s);
            SinkStats {
                sent_total: s.written.len() as u64,
                connected: s.connected,
                queued_bytes: 0,
            }
        }
    }

    fn fakes(n: usize) -> (Delivery, Vec<Arc<Mutex<Script>>>) {
        let scripts: Vec<_> = (0..n)
            .map(|_| Arc::new(Mutex::new(Script::default())))
            .collect();
        let sinks = scripts
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Box::new(Fake {
                    name: format!("o{i}"),
                    s: Arc::clone(s),
                }) as Box<dyn Sink>
            })
            .collect();
        (Delivery::start(sinks).unwrap(), scripts)
    }

    #[test]
    fn a_page_is_confirmed_when_every_output_took_it() {
        let (d, s) = fakes(2);
        d.ensure_ready().unwrap();
        let mut p = d.page();
        p.write(b"a\n", 1).unwrap();
        p.write(b"b\n", 1).unwrap();
        p.confirm().unwrap();
        for x in &s {
            let x = lock(x);
            assert_eq!(x.written, b"a\nb\n");
            assert!(x.confirms >= 1);
        }
        assert_eq!(d.stats()[1].1.sent_total, 4);
        // An empty page needs no confirm round.
        d.page().confirm().unwrap();
    }

    #[test]
    fn a_failed_write_fails_the_page_and_the_next_connect_starts_a_new_epoch() {
        let (d, s) = fakes(2);
        d.ensure_ready().unwrap();
        lock(&s[1]).fail_write = true;
        let mut p = d.page();
        p.write(b"a\n", 1).unwrap();
        let e = p.confirm().unwrap_err();
        assert!(
            e.is_transient() && e.to_string().contains("write failed"),
            "{e}"
        );
        assert!(!d.stats()[1].1.connected);
        // A page begun while the output is down fails at once, without blocking.
        let mut p = d.page();
        assert!(p.write(b"b\n", 1).is_err());
        lock(&s[1]).fail_write = false;
        d.ensure_ready().unwrap();
        let mut p = d.page();
        p.write(b"c\n", 1).unwrap();
        p.confirm().unwrap();
        assert_eq!(lock(&s[1]).written, b"c\n");
        assert_eq!(lock(&s[0]).written, b"a\nc\n");
    }

    #[test]
    fn a_failed_confirm_fails_every_waiting_page() {
        let (d, s) = fakes(1);
        d.ensure_ready().unwrap();
        lock(&s[0]).fail_confirm = true;
        let mut p = d.page();
        p.write(b"a\n", 1).unwrap();
        assert!(p.confirm().unwrap_err().is_transient());
    }

    #[test]
    fn a_batch_of_a_page_begun_before_a_reconnect_is_not_written() {
        let (d, s) = fakes(1);
        d.ensure_ready().unwrap();
        let mut old = d.page();
        lock(&s[0]).fail_write = true;
        let mut p = d.page();
        p.write(b"x\n", 1).unwrap();
        assert!(p.confirm().is_err());
        lock(&s[0]).fail_write = false;
        d.ensure_ready().unwrap();
        // `old` began in the failed epoch: its batch is refused, nothing is written.
        assert!(old.write(b"old\n", 1).is_err());
        assert!(old.confirm().is_err());
        assert!(lock(&s[0]).written.is_empty());
    }

    #[test]
    fn transient_and_permanent_refusals() {
        let (d, s) = fakes(1);
        lock(&s[0]).refuse = Some(true);
        let e = d.ensure_ready().unwrap_err();
        assert!(e.is_transient() && e.to_string().contains("refused"), "{e}");
        lock(&s[0]).refuse = Some(false);
        let e = d.ensure_ready().unwrap_err();
        assert!(!e.is_transient(), "{e}");
        // Permanent: asked again, the answer comes without a new attempt.
        lock(&s[0]).refuse = None;
        assert!(!d.ensure_ready().unwrap_err().is_transient());
    }

    #[test]
    fn a_blocked_output_blocks_neither_statistics_nor_the_other_writer() {
        let (d, s) = fakes(2);
        d.ensure_ready().unwrap();
        lock(&s[1]).block_confirm = true;
        std::thread::scope(|sc| {
            let waiter = sc.spawn(|| {
                let mut p = d.page();
                p.write(b"a\n", 1).unwrap();
                p.confirm()
            });
            let start = Instant::now();
            while lock(&s[1]).written.is_empty() || lock(&s[0]).written.is_empty() {
                assert!(start.elapsed() < Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(5));
            }
            let t = Instant::now();
            let st = d.stats();
            assert!(t.elapsed() < Duration::from_millis(50));
            assert_eq!(st[0].1.sent_total, 2);
            // Readiness answers at once too.
            d.ensure_ready().unwrap();
            assert!(!waiter.is_finished());
            lock(&s[1]).block_confirm = false;
            waiter.join().unwrap().unwrap();
        });
    }

    #[test]
    fn queued_bytes_per_output_are_bounded() {
        let (d, s) = fakes(1);
        d.ensure_ready().unwrap();
        lock(&s[0]).block_confirm = true;
        // Keep the writer busy in a confirm, then fill the queue.
        let mut first = d.page();
        first.write(b"a\n", 1).unwrap();
        let big = vec![b'x'; LANE_BYTES / 2];
        std::thread::scope(|sc| {
            let c = sc.spawn(|| first.confirm());
            let start = Instant::now();
            while !lock(&s[0]).confirming {
                assert!(start.elapsed() < Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(5));
            }
            let filler = sc.spawn(|| {
                let mut p = d.page();
                for _ in 0..4 {
                    p.write(&big, 1).unwrap();
                }
            });
            std::thread::sleep(Duration::from_millis(200));
            let q = d.stats()[0].1.queued_bytes;
            assert!(q <= LANE_BYTES as u64, "{q}");
            assert!(!filler.is_finished(), "the third batch waits for room");
            lock(&s[0]).block_confirm = false;
            filler.join().unwrap();
            c.join().unwrap().unwrap();
        });
    }
}
