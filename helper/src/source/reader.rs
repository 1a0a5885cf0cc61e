//! The reader thread's loop: recv, parse, queue, and when idle attribute on the spot.
//!
//! It does nothing slow, so the kernel's buffer drains even while the pipeline works; when the
//! queue is full it waits and the kernel's buffer holds the rest. Drops the kernel counts come
//! out as `Lost`, a socket error reopens the subscription (reported), and everything runs over
//! the small [`EventSource`] seam, so the loop is tested with a scripted source.

use std::io;
use std::time::{Duration, Instant, SystemTime};

use crate::attribution::{Attribution, Attributor};
use crate::config::Config;
use crate::direction::{classify, LocalAddrs};
use crate::filter;
use crate::flow::Flow;
use crate::flow::FlowEvent;
use crate::sanitize::escape as sanitize;
use crate::source::conntrack::{parse_datagram, EventSocket, Message};
use crate::source::queue::FlowSender;

/// Flows closer together than this are a burst: the reader leaves attribution to the pipeline.
pub const BURST_GAP: Duration = Duration::from_millis(1);
/// In a burst the reader pauses this long after each batch, so that the next wakeup finds a
/// batch again instead of a single event: one wakeup per event (the reader, at real-time
/// priority, is faster than any burst) is what costs most CPU. It adds at most this much to
/// the latency of flows that arrive in a burst, none to others. 2 ms, not 0.5: in the
/// benchmark's burst (35,000 flows a second) a wakeup then reads ~70 flows, not ~17, and a
/// context switch on a VM costs as much as a few flows' work.
pub const BURST_NAP: Duration = Duration::from_millis(2);
/// Messages read without waiting after a wakeup, at most, before the batch is handed on.
///
/// A batch goes to the pipeline as one message: handing flows over one by one cost a wakeup
/// of the pipeline (or a wait of the reader) per flow, the largest share of the helper's CPU
/// in a burst.
pub const BATCH_LIMIT: usize = 256;
/// Datagrams read by one system call after the first of a wakeup (`recvmmsg`).
const RECV_AT_ONCE: usize = 32;
/// Each one's buffer. A conntrack event is a few hundred bytes (`ctnetlink_nlmsg_size`);
/// a longer datagram is reported as garbled, never silently dropped.
const RECV_BUF: usize = 8 << 10;
/// Consecutive socket errors after which the reader gives up.
const MAX_FAILURES: u32 = 5;
/// While the kernel reports congestion, how long the reader waits for an event before it
/// looks at the drop counter anyway: the kernel reports congestion once (ENOBUFS), then
/// counts drops silently until it clears. Otherwise it waits for the next event, however long
/// that takes, so an idle helper does not wake.
pub const CONGESTED_WAKE: Duration = Duration::from_millis(500);

/// What the reader thread hands to the pipeline at once: what one wakeup read, in order.
pub type Batch = Vec<Incoming>;

/// One message of the reader to the pipeline.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A flow, when it was read, and its attribution if the reader could do it at once.
    Flow {
        flow: Flow,
        at: SystemTime,
        /// The same moment on the monotonic clock.
        read: Instant,
        /// Boxed: most flows in a burst carry none, and the queue holds thousands.
        early: Option<Box<Attribution>>,
    },
    /// Events the kernel dropped because our socket buffer was full.
    Lost(u64),
    /// A socket error the reader recovered from by reopening the socket.
    Reopened(String),
    /// A message the parser could not read (skipped).
    Garbled(String),
}

/// Settings the reader's early attribution must follow: the latest of each, in one slot.
///
/// The main loop may apply thousands of commands while no flow comes to make the reader look
/// (a hostile caller can send 1 MB configurations in a loop); a queue would keep a copy of
/// every one. The slot keeps only the newest, so memory stays at two configurations.
///
/// The reader asks before every datagram, at real-time priority: it looks at a flag first and
/// takes the lock only when something was sent, and a value replaced before the reader took
/// it is freed outside the lock, by the thread that replaced it. (The configuration the
/// reader was using is still freed by the reader, when it takes a new one.)
#[derive(Default)]
pub struct EarlyUpdates {
    slot: std::sync::Mutex<(Option<Box<Config>>, Option<LocalAddrs>)>,
    sent: std::sync::atomic::AtomicBool,
}

impl EarlyUpdates {
    fn slot(&self) -> std::sync::MutexGuard<'_, (Option<Box<Config>>, Option<LocalAddrs>)> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces any configuration not yet taken.
    pub fn set_config(&self, cfg: Box<Config>) {
        let old = self.slot().0.replace(cfg);
        self.sent.store(true, std::sync::atomic::Ordering::Release);
        drop(old);
    }

    /// Replaces any addresses not yet taken.
    pub fn set_addrs(&self, addrs: LocalAddrs) {
        let old = self.slot().1.replace(addrs);
        self.sent.store(true, std::sync::atomic::Ordering::Release);
        drop(old);
    }

    /// What changed since the last call.
    pub fn take(&self) -> (Option<Box<Config>>, Option<LocalAddrs>) {
        if !self.sent.swap(false, std::sync::atomic::Ordering::Acquire) {
            return (None, None);
        }
        std::mem::take(&mut *self.slot())
    }
}

/// Attribution at the earliest moment: in the reader thread, right after the event is read,
/// while the pipeline is idle.
///
/// A short-lived program can connect, write and exit within a hundred microseconds; every
/// thread hand-off before the /proc lookup is time it may use to vanish. So when nothing is
/// queued the reader attributes the flow itself (only flows the cheap filter rules keep),
/// and the pipeline only falls back to its own lookup when the reader did not try or did not
/// succeed. During a burst flows come less than [`BURST_GAP`] apart, or batches wait in the
/// queue, and the reader does nothing but read.
pub struct Early<A> {
    cfg: Config,
    addrs: LocalAddrs,
    attributor: A,
}

impl<A: Attributor> Early<A> {
    pub fn new(cfg: Config, addrs: LocalAddrs, attributor: A) -> Self {
        Early {
            cfg,
            addrs,
            attributor,
        }
    }

    pub fn set_config(&mut self, cfg: Config) {
        self.cfg = cfg;
    }

    pub fn set_addrs(&mut self, addrs: LocalAddrs) {
        self.addrs = addrs;
    }

    /// The machine's addresses as the reader last heard of them.
    pub fn addrs(&self) -> &LocalAddrs {
        &self.addrs
    }

    pub fn attribute(&mut self, flow: &Flow) -> Option<Attribution> {
        self.attribute_read_at(flow, Instant::now())
    }

    /// For a flow whose event was read at `read` (the records are judged against that).
    pub fn attribute_read_at(&mut self, flow: &Flow, read: Instant) -> Option<Attribution> {
        if flow.event != FlowEvent::New {
            return None;
        }
        let sides = classify(flow, &self.addrs);
        filter::before_attribution(&self.cfg, &sides).ok()?;
        self.attributor.attribute_read_at(&sides, read)
    }
}

/// Where conntrack events come from.
pub trait EventSource {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Like `recv`, but `WouldBlock` at once when nothing is queued.
    fn recv_nowait(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let _ = buf;
        Err(io::ErrorKind::WouldBlock.into())
    }
    /// Like `recv_nowait`, for as many datagrams as `bufs` has buffers, each into its own:
    /// each one's length, `None` for one its buffer cut short; `WouldBlock` when none is
    /// queued.
    fn recv_many_nowait(&mut self, bufs: &mut [Vec<u8>]) -> io::Result<Vec<Option<usize>>> {
        let mut out = Vec::new();
        for b in bufs.iter_mut() {
            match self.recv_nowait(b) {
                Ok(n) => out.push(Some(n)),
                Err(e) if out.is_empty() => return Err(e),
                // Met again by the next call.
                Err(_) => break,
            }
        }
        Ok(out)
    }
    /// Drops the kernel counted since the last call (at least one after an ENOBUFS).
    fn take_lost(&mut self, after_enobufs: bool) -> u64;
    /// Replaces the subscription after a socket error.
    fn reopen(&mut self) -> io::Result<()>;
    /// How long to wait before reopening after the n-th failure in a row.
    fn backoff(&self, failures: u32) -> Duration {
        Duration::from_millis(100 * u64::from(failures))
    }
    /// Makes `recv` fail with `WouldBlock` (or `TimedOut`) after `after` without an event;
    /// `None`: it waits for one. Kept across `reopen`.
    fn set_idle_wake(&mut self, after: Option<Duration>) -> io::Result<()> {
        let _ = after;
        Ok(())
    }
}

impl EventSource for EventSocket {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        EventSocket::recv(self, buf)
    }
    fn recv_many_nowait(&mut self, bufs: &mut [Vec<u8>]) -> io::Result<Vec<Option<usize>>> {
        EventSocket::recv_many_nowait(self, bufs)
    }
    fn take_lost(&mut self, after_enobufs: bool) -> u64 {
        EventSocket::take_lost(self, after_enobufs)
    }
    fn reopen(&mut self) -> io::Result<()> {
        EventSocket::reopen(self)
    }
    fn set_idle_wake(&mut self, after: Option<Duration>) -> io::Result<()> {
        EventSocket::set_idle_wake(self, after)
    }
}

/// The configuration and addresses the main thread sent since the last datagram.
fn apply_updates<A: Attributor>(early: &mut Early<A>, updates: &EarlyUpdates) {
    let (cfg, addrs) = updates.take();
    if let Some(c) = cfg {
        early.set_config(*c);
    }
    if let Some(a) = addrs {
        early.set_addrs(a);
    }
}

/// The reader's own attribution of a flow, right after reading it (see [`Early`]).
fn early_attribution<A: Attributor>(
    early: &mut Early<A>,
    flow: &Flow,
    (at, read): (SystemTime, Instant),
    debug: bool,
) -> Option<Box<Attribution>> {
    let t0 = Instant::now();
    let found = early.attribute_read_at(flow, read).map(Box::new);
    if debug {
        eprintln!(
            "debug: early attribution of {}:{} took {:?}, {:?} after the event was read: {}",
            flow.orig.src,
            flow.orig.sport,
            t0.elapsed(),
            at.elapsed().unwrap_or_default(),
            found
                .as_ref()
                .map(|a| sanitize(&a.process.comm).into_owned())
                .unwrap_or_else(|| "none".into())
        );
    }
    found
}

/// What the reader keeps between datagrams.
struct Reading<A> {
    early: Early<A>,
    updates: std::sync::Arc<EarlyUpdates>,
    debug: bool,
    congested: bool,
    last_flow: Instant,
    seen: crate::pickups::SeenFromSyn,
}

impl<A: Attributor> Reading<A> {
    /// Parses one datagram into `out`; `queued` says whether the pipeline has work waiting.
    fn datagram<S: EventSource>(
        &mut self,
        source: &mut S,
        bytes: &[u8],
        queued: bool,
        out: &mut Vec<Incoming>,
    ) {
        let (at, read) = (SystemTime::now(), Instant::now());
        // Before any flow of the datagram is noted: what is this machine's address decides
        // how a SYN is remembered, and a stream of filtered flows must not keep it stale.
        apply_updates(&mut self.early, &self.updates);
        for m in parse_datagram(bytes) {
            out.push(match m {
                Ok(Message::Flow(mut flow)) => {
                    // Every flow passes here once, in order: the one place to remember them.
                    let addrs = self.early.addrs();
                    self.seen.note(&mut flow, |ip| addrs.is_local(ip));
                    // Only when the pipeline has caught up and flows are not arriving back
                    // to back: in a burst, just read, and let the pipeline attribute the
                    // queued flows in one go.
                    let calm = read.saturating_duration_since(self.last_flow) >= BURST_GAP;
                    self.last_flow = read;
                    let early = if calm && !queued && out.is_empty() {
                        let when = (at, read);
                        early_attribution(&mut self.early, &flow, when, self.debug)
                    } else {
                        None
                    };
                    Incoming::Flow {
                        flow,
                        at,
                        read,
                        early,
                    }
                }
                Ok(Message::Error(code)) if code == -libc::ENOBUFS => {
                    self.congested = true;
                    self.seen.lost();
                    Incoming::Lost(source.take_lost(true))
                }
                Ok(_) => continue,
                Err(e) => Incoming::Garbled(e.to_string()),
            });
        }
    }
}

/// Runs until the pipeline goes away or the source fails `MAX_FAILURES` times in a row.
pub fn run<S: EventSource, A: Attributor>(
    source: S,
    tx: FlowSender,
    early: Early<A>,
    updates: std::sync::Arc<EarlyUpdates>,
    debug: bool,
) {
    run_with(source, tx, early, updates, debug, Default::default());
}

/// [`run`], with what the reader knows of TCP connections from the start (the connections
/// that were there when the helper started: [`crate::pickups::SeenFromSyn::with_before`]).
pub fn run_with<S: EventSource, A: Attributor>(
    mut source: S,
    tx: FlowSender,
    early: Early<A>,
    updates: std::sync::Arc<EarlyUpdates>,
    debug: bool,
    seen: crate::pickups::SeenFromSyn,
) {
    let mut buf = vec![0u8; 1 << 16];
    let mut bufs = vec![vec![0u8; RECV_BUF]; RECV_AT_ONCE];
    let mut failures = 0u32;
    let mut r = Reading {
        early,
        updates,
        debug,
        congested: false,
        last_flow: Instant::now() - BURST_GAP,
        seen,
    };
    // Whether `recv` gives up after CONGESTED_WAKE: only while congested.
    let mut waking = false;
    loop {
        if r.congested != waking {
            waking = r.congested;
            // Should it fail, the drops are counted at the next event instead.
            let _ = source.set_idle_wake(waking.then_some(CONGESTED_WAKE));
        }
        let mut msgs: Batch = Vec::new();
        let mut nap = false;
        match source.recv(&mut buf) {
            Ok(n) => {
                failures = 0;
                nap = r.last_flow.elapsed() < BURST_GAP;
                r.datagram(
                    &mut source,
                    &buf[..n.min(buf.len())],
                    !tx.is_empty(),
                    &mut msgs,
                );
                // Whatever else is queued, without waiting: one wakeup for the lot, read
                // RECV_AT_ONCE datagrams a system call.
                for _ in 0..BATCH_LIMIT.div_ceil(RECV_AT_ONCE) {
                    if msgs.len() >= BATCH_LIMIT {
                        break;
                    }
                    // No more datagrams than the batch has room for.
                    let room = (BATCH_LIMIT - msgs.len()).min(bufs.len());
                    match source.recv_many_nowait(&mut bufs[..room]) {
                        Ok(lens) => {
                            let queued = !tx.is_empty();
                            for (b, len) in bufs.iter().zip(&lens) {
                                match len {
                                    Some(n) => {
                                        let bytes = &b[..(*n).min(b.len())];
                                        r.datagram(&mut source, bytes, queued, &mut msgs);
                                    }
                                    None => msgs.push(Incoming::Garbled(format!(
                                        "a datagram longer than {} bytes",
                                        b.len()
                                    ))),
                                }
                            }
                            if lens.len() < room {
                                break;
                            }
                        }
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                            r.congested = true;
                            msgs.push(Incoming::Lost(source.take_lost(true)));
                        }
                        // Nothing more (or an error, which the next blocking recv meets).
                        Err(_) => break,
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                r.congested = true;
                msgs.push(Incoming::Lost(source.take_lost(true)));
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                // Idle while congested: report drops counted since the last ENOBUFS, once.
                if std::mem::take(&mut r.congested) {
                    let lost = source.take_lost(false);
                    if lost > 0 {
                        msgs.push(Incoming::Lost(lost));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                failures += 1;
                if failures > MAX_FAILURES {
                    return;
                }
                std::thread::sleep(source.backoff(failures));
                // What the old socket had counted, then the reopened one.
                let lost = source.take_lost(false);
                if lost > 0 {
                    msgs.push(Incoming::Lost(lost));
                }
                if source.reopen().is_ok() {
                    msgs.push(Incoming::Reopened(e.to_string()));
                }
            }
        }
        if msgs.iter().any(|m| {
            matches!(
                m,
                Incoming::Lost(_) | Incoming::Reopened(_) | Incoming::Garbled(_)
            )
        }) {
            r.seen.lost();
        }
        if !msgs.is_empty() && tx.send(msgs).is_err() {
            return;
        }
        if nap {
            std::thread::sleep(BURST_NAP);
        }
    }
}

/// A scripted event source and an attributor that names everyone, for the tests of the
/// reader and of the main loop.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::direction::Sides;
    use std::collections::VecDeque;

    /// Plays a script of recv results, then says the socket is gone for good.
    pub struct Script {
        pub steps: VecDeque<io::Result<Vec<u8>>>,
        pub reopened: u32,
        pub lost: u64,
    }

    impl EventSource for Script {
        fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.steps.pop_front() {
                Some(Ok(bytes)) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len())
                }
                Some(Err(e)) => Err(e),
                None => Err(io::Error::from_raw_os_error(libc::EBADF)),
            }
        }
        fn take_lost(&mut self, after_enobufs: bool) -> u64 {
            let l = std::mem::take(&mut self.lost);
            if after_enobufs {
                l.max(1)
            } else {
                l
            }
        }
        fn reopen(&mut self) -> io::Result<()> {
            self.reopened += 1;
            Ok(())
        }
        fn backoff(&self, _: u32) -> Duration {
            Duration::ZERO
        }
    }

    pub struct Everyone;
    impl Attributor for Everyone {
        fn attribute(&mut self, _: &Sides) -> Option<Attribution> {
            Some(Attribution {
                process: crate::event::Process {
                    pid: 1,
                    comm: "init".into(),
                    exe: None,
                    cmdline: vec![],
                    uid: 0,
                    user: None,
                    ..Default::default()
                },
                by: crate::event::AttributedBy::Socket,
                holders: crate::attribution::Holders::decided(),
            })
        }
    }
}

#[cfg(test)]
mod tests;
