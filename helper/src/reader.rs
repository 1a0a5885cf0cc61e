//! The reader thread's loop: recv, parse, queue, and when idle attribute on the spot.
//!
//! It does nothing slow, so the kernel's buffer drains even while the pipeline works; when the
//! queue is full it waits and the kernel's buffer holds the rest. Drops the kernel counts come
//! out as `Lost`, a socket error reopens the subscription (reported), and everything runs over
//! the small [`EventSource`] seam, so the loop is tested with a scripted source.

use std::io;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::attribution::{Attribution, Attributor};
use crate::conntrack::{parse_datagram, EventSocket, Message};
use crate::event::Flow;
use crate::output::sanitize;
use crate::pipeline::{Early, EarlyUpdate, Incoming};

/// Flows closer together than this are a burst: the reader leaves attribution to the pipeline.
pub const BURST_GAP: Duration = Duration::from_millis(1);
/// Consecutive socket errors after which the reader gives up.
const MAX_FAILURES: u32 = 5;

/// Where conntrack events come from.
pub trait EventSource {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Drops the kernel counted since the last call (at least one after an ENOBUFS).
    fn take_lost(&mut self, after_enobufs: bool) -> u64;
    /// Replaces the subscription after a socket error.
    fn reopen(&mut self) -> io::Result<()>;
    /// How long to wait before reopening after the n-th failure in a row.
    fn backoff(&self, failures: u32) -> Duration {
        Duration::from_millis(100 * u64::from(failures))
    }
}

impl EventSource for EventSocket {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        EventSocket::recv(self, buf)
    }
    fn take_lost(&mut self, after_enobufs: bool) -> u64 {
        EventSocket::take_lost(self, after_enobufs)
    }
    fn reopen(&mut self) -> io::Result<()> {
        EventSocket::reopen(self)
    }
}

/// The reader's own attribution of a flow, right after reading it (see [`Early`]), with the
/// settings the main loop sent since the last one.
fn early_attribution<A: Attributor>(
    early: &mut Early<A>,
    updates: &Receiver<EarlyUpdate>,
    flow: &Flow,
    at: SystemTime,
    debug: bool,
) -> Option<Box<Attribution>> {
    for u in updates.try_iter() {
        match u {
            EarlyUpdate::Config(c) => early.set_config(*c),
            EarlyUpdate::Addrs(a) => early.set_addrs(a),
        }
    }
    let t0 = Instant::now();
    let found = early.attribute(flow).map(Box::new);
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

/// Runs until the pipeline goes away or the source fails [`MAX_FAILURES`] times in a row.
pub fn run<S: EventSource, A: Attributor>(
    mut source: S,
    tx: Sender<Incoming>,
    mut early: Early<A>,
    updates: Receiver<EarlyUpdate>,
    debug: bool,
) {
    let mut buf = vec![0u8; 1 << 16];
    let mut failures = 0u32;
    let mut congested = false;
    let mut last_flow = Instant::now() - BURST_GAP;
    loop {
        let msgs: Vec<Incoming> = match source.recv(&mut buf) {
            Ok(n) => {
                failures = 0;
                let (at, read) = (SystemTime::now(), Instant::now());
                let mut out = Vec::new();
                for m in parse_datagram(&buf[..n.min(buf.len())]) {
                    out.push(match m {
                        Ok(Message::Flow(flow)) => {
                            // Only when the pipeline has caught up and flows are not arriving
                            // back to back: in a burst, just read, and let the pipeline
                            // attribute the queued flows in one go.
                            let calm = read.saturating_duration_since(last_flow) >= BURST_GAP;
                            last_flow = read;
                            let early = if calm && tx.is_empty() {
                                early_attribution(&mut early, &updates, &flow, at, debug)
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
                            congested = true;
                            Incoming::Lost(source.take_lost(true))
                        }
                        Ok(_) => continue,
                        Err(e) => Incoming::Garbled(e.to_string()),
                    });
                }
                out
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                congested = true;
                vec![Incoming::Lost(source.take_lost(true))]
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                // Idle: report drops counted since the last ENOBUFS, once.
                match std::mem::take(&mut congested).then(|| source.take_lost(false)) {
                    Some(lost) if lost > 0 => vec![Incoming::Lost(lost)],
                    _ => Vec::new(),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Vec::new(),
            Err(e) => {
                failures += 1;
                if failures > MAX_FAILURES {
                    return;
                }
                std::thread::sleep(source.backoff(failures));
                // What the old socket had counted, then the reopened one.
                let mut out = Vec::new();
                let lost = source.take_lost(false);
                if lost > 0 {
                    out.push(Incoming::Lost(lost));
                }
                if source.reopen().is_ok() {
                    out.push(Incoming::Reopened(e.to_string()));
                }
                out
            }
        };
        for m in msgs {
            if tx.send(m).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::direction::{LocalAddrs, Sides};
    use std::collections::VecDeque;

    const TCP4_NEW: &[u8] = include_bytes!("../tests/data/tcp4_new.bin");

    /// Plays a script of recv results, then says the socket is gone for good.
    struct Script {
        steps: VecDeque<io::Result<Vec<u8>>>,
        reopened: u32,
        lost: u64,
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

    struct Nobody;
    impl Attributor for Nobody {
        fn attribute(&mut self, _: &Sides) -> Option<Attribution> {
            None
        }
    }

    #[test]
    fn a_socket_error_reopens_and_reading_goes_on() {
        let script = Script {
            steps: VecDeque::from([
                Ok(TCP4_NEW.to_vec()),
                Err(io::Error::from_raw_os_error(libc::EIO)),
                Ok(TCP4_NEW.to_vec()),
                Err(io::Error::from_raw_os_error(libc::ENOBUFS)),
                Err(io::Error::from(io::ErrorKind::WouldBlock)),
                Ok(vec![1, 2, 3]),
            ]),
            reopened: 0,
            lost: 7,
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let (_utx, urx) = crossbeam_channel::unbounded();
        let early = Early::new(Config::default(), LocalAddrs::default(), Nobody);
        // The script ends in EBADF forever: the loop gives up after MAX_FAILURES.
        run(script, tx, early, urx, false);
        let got: Vec<Incoming> = rx.try_iter().collect();
        let kinds: Vec<&str> = got
            .iter()
            .map(|m| match m {
                Incoming::Flow { .. } => "flow",
                Incoming::Lost(_) => "lost",
                Incoming::Reopened(_) => "reopened",
                Incoming::Garbled(_) => "garbled",
            })
            .collect();
        // flow; EIO: the 7 counted drops, reopened; flow; ENOBUFS: at least one lost; the bytes
        // 1 2 3 are too short for a header (nothing); then EBADF reopens until it gives up.
        assert_eq!(
            &kinds[..5],
            ["flow", "lost", "reopened", "flow", "lost"],
            "{kinds:?}"
        );
        assert!(matches!(got[1], Incoming::Lost(7)));
        assert_eq!(
            kinds.iter().filter(|k| **k == "reopened").count(),
            1 + MAX_FAILURES as usize
        );
    }
}
