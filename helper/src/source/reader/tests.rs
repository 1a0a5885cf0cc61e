//! The reader loop's tests, over scripted event sources.

use super::testing::{Everyone, Script};
use super::*;
use crate::direction::Sides;
use std::collections::VecDeque;
use std::sync::Arc;

const TCP4_NEW: &[u8] = include_bytes!("../../../tests/data/tcp4_new.bin");

/// Wakeups, each with the datagrams queued at that moment: `recv` returns the next datagram
/// of the current wakeup, or waits for the next wakeup; `recv_nowait` only the former.
struct Batches {
    wakeups: VecDeque<VecDeque<Vec<u8>>>,
    current: VecDeque<Vec<u8>>,
}

impl EventSource for Batches {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // What is still queued first, as a socket would.
        if self.current.is_empty() {
            self.current = self
                .wakeups
                .pop_front()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        }
        self.recv_nowait(buf)
    }
    fn recv_nowait(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let bytes = self
            .current
            .pop_front()
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        buf[..bytes.len()].copy_from_slice(&bytes);
        Ok(bytes.len())
    }
    fn take_lost(&mut self, _: bool) -> u64 {
        0
    }
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn backoff(&self, _: u32) -> Duration {
        Duration::ZERO
    }
}

/// What the reader hands the pipeline for `wakeups` (each the datagrams queued at once), to
/// the script's end.
fn read_all<A: Attributor>(
    wakeups: impl IntoIterator<Item = Vec<Vec<u8>>>,
    early: Early<A>,
) -> Vec<Batch> {
    let source = Batches {
        wakeups: wakeups.into_iter().map(VecDeque::from).collect(),
        current: VecDeque::new(),
    };
    let (tx, queue) = crate::source::queue::flow_queue(usize::MAX);
    let rx = queue.channel();
    run(source, tx, early, Arc::new(EarlyUpdates::default()), false);
    rx.try_iter().collect()
}

#[test]
fn one_wakeup_reads_everything_queued_and_only_a_lone_flow_is_attributed_early() {
    let Ok(Message::Flow(flow)) = parse_datagram(TCP4_NEW).remove(0) else {
        panic!("the captured message is a flow");
    };
    let mut cfg = Config::default();
    cfg.filter.ignore_loopback = false;
    let early = Early::new(cfg, LocalAddrs::new([flow.orig.src]), Everyone);
    let source = Batches {
        wakeups: VecDeque::from([
            VecDeque::from([TCP4_NEW.to_vec()]),
            VecDeque::from(vec![TCP4_NEW.to_vec(); 5]),
        ]),
        current: VecDeque::new(),
    };
    let (tx, queue) = crate::source::queue::flow_queue(usize::MAX);
    let rx = queue.channel();
    let urx = std::sync::Arc::new(EarlyUpdates::default());
    run(source, tx, early, urx, false);
    let batches: Vec<Batch> = rx.try_iter().collect();
    // One message to the pipeline per wakeup (then the script's end: reopenings).
    assert_eq!(
        batches.iter().take(2).map(Vec::len).collect::<Vec<_>>(),
        [1, 5],
        "{batches:?}"
    );
    let early: Vec<bool> = batches
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Incoming::Flow { early, .. } => Some(early.is_some()),
            _ => None,
        })
        .collect();
    // All five of the second wakeup are read (`recv` alone would have lost four). The lone
    // flow is named by the reader; in a batch, all but the first are left to the pipeline
    // (the first too when it comes within BURST_GAP of the last, as it does unless this
    // test stalls).
    assert_eq!(early.len(), 6, "{early:?}");
    assert!(early[0]);
    assert_eq!(early[2..], [false; 4]);
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
    let (tx, queue) = crate::source::queue::flow_queue(usize::MAX);
    let rx = queue.channel();
    let urx = std::sync::Arc::new(EarlyUpdates::default());
    let early = Early::new(Config::default(), LocalAddrs::default(), Nobody);
    // The script ends in EBADF forever: the loop gives up after MAX_FAILURES.
    run(script, tx, early, urx, false);
    let got: Vec<Incoming> = rx.try_iter().flatten().collect();
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

/// Plays a script and keeps the idle wakes it was asked for.
struct Waking {
    script: Script,
    wakes: std::sync::Arc<std::sync::Mutex<Vec<Option<Duration>>>>,
}

impl EventSource for Waking {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.script.recv(buf)
    }
    fn take_lost(&mut self, after_enobufs: bool) -> u64 {
        self.script.take_lost(after_enobufs)
    }
    fn reopen(&mut self) -> io::Result<()> {
        self.script.reopen()
    }
    fn backoff(&self, failures: u32) -> Duration {
        self.script.backoff(failures)
    }
    fn set_idle_wake(&mut self, after: Option<Duration>) -> io::Result<()> {
        self.wakes.lock().expect("lock").push(after);
        Ok(())
    }
}

#[test]
fn the_reader_waits_for_events_and_wakes_on_its_own_only_while_congested() {
    let wakes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let source = Waking {
        script: Script {
            steps: VecDeque::from([
                Ok(TCP4_NEW.to_vec()),
                Err(io::Error::from_raw_os_error(libc::ENOBUFS)),
                Ok(TCP4_NEW.to_vec()),
                // CONGESTED_WAKE passed without an event.
                Err(io::Error::from(io::ErrorKind::WouldBlock)),
                Ok(TCP4_NEW.to_vec()),
            ]),
            reopened: 0,
            lost: 0,
        },
        wakes: wakes.clone(),
    };
    let (tx, queue) = crate::source::queue::flow_queue(usize::MAX);
    let rx = queue.channel();
    let urx = std::sync::Arc::new(EarlyUpdates::default());
    let early = Early::new(Config::default(), LocalAddrs::default(), Nobody);
    run(source, tx, early, urx, false);
    assert_eq!(
        rx.try_iter()
            .flatten()
            .filter(|m| matches!(m, Incoming::Flow { .. }))
            .count(),
        3
    );
    // Blocking from the start; a timeout from the ENOBUFS until the reader found the
    // socket idle; blocking again after that (the script's end, EBADF, changes nothing).
    assert_eq!(*wakes.lock().expect("lock"), [Some(CONGESTED_WAKE), None],);
}

#[test]
fn early_attribution_skips_flows_the_cheap_rules_drop() {
    let mut e = Early::new(
        Config::default(),
        LocalAddrs::new(["10.0.0.1".parse().expect("ip")]),
        Everyone,
    );
    let tcp =
        crate::flow::fixtures::flow(crate::flow::Proto::Tcp, "10.0.0.1", 40000, "9.9.9.9", 443);
    assert!(e.attribute(&tcp).is_some());
    // UDP is not watched by default, loopback is ignored: no lookup is made.
    assert!(e
        .attribute(&crate::flow::fixtures::flow(
            crate::flow::Proto::Udp,
            "10.0.0.1",
            40000,
            "9.9.9.9",
            53
        ))
        .is_none());
    assert!(e
        .attribute(&crate::flow::fixtures::flow(
            crate::flow::Proto::Tcp,
            "127.0.0.1",
            40000,
            "127.0.0.1",
            80
        ))
        .is_none());
    let mut all = Config::default();
    all.monitor.protocols = vec![crate::config::ProtoSel::All];
    e.set_config(all);
    assert!(e
        .attribute(&crate::flow::fixtures::flow(
            crate::flow::Proto::Udp,
            "10.0.0.1",
            40000,
            "9.9.9.9",
            53
        ))
        .is_some());
}

#[test]
fn a_wakeup_with_more_than_a_batch_queued_is_handed_on_in_whole_batches_losing_nothing() {
    let Ok(Message::Flow(flow)) = parse_datagram(TCP4_NEW).remove(0) else {
        panic!("the captured message is a flow");
    };
    let early = Early::new(Config::default(), LocalAddrs::new([flow.orig.src]), Nobody);
    let queued = 2 * BATCH_LIMIT + 7;
    let flows: Vec<usize> = read_all([vec![TCP4_NEW.to_vec(); queued]], early)
        .into_iter()
        .map(|b| {
            b.iter()
                .filter(|m| matches!(m, Incoming::Flow { .. }))
                .count()
        })
        .filter(|&n| n > 0)
        .collect();
    assert_eq!(flows, [BATCH_LIMIT, BATCH_LIMIT, 7]);
}

/// A socket whose one wakeup has a datagram, one too long for its buffer, and another.
struct WithALongOne {
    recvs: u32,
    rest_read: bool,
}

impl EventSource for WithALongOne {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recvs += 1;
        if self.recvs > 1 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        buf[..TCP4_NEW.len()].copy_from_slice(TCP4_NEW);
        Ok(TCP4_NEW.len())
    }
    fn recv_many_nowait(&mut self, bufs: &mut [Vec<u8>]) -> io::Result<Vec<Option<usize>>> {
        if std::mem::replace(&mut self.rest_read, true) || bufs.len() < 2 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        bufs[1][..TCP4_NEW.len()].copy_from_slice(TCP4_NEW);
        Ok(vec![None, Some(TCP4_NEW.len())])
    }
    fn take_lost(&mut self, _: bool) -> u64 {
        0
    }
    fn reopen(&mut self) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EBADF))
    }
    fn backoff(&self, _: u32) -> Duration {
        Duration::ZERO
    }
}

#[test]
fn a_datagram_its_buffer_cut_short_is_reported_and_the_rest_read_on() {
    let early = Early::new(Config::default(), LocalAddrs::default(), Nobody);
    let (tx, queue) = crate::source::queue::flow_queue(usize::MAX);
    run(
        WithALongOne {
            recvs: 0,
            rest_read: false,
        },
        tx,
        early,
        std::sync::Arc::new(EarlyUpdates::default()),
        false,
    );
    let first: Vec<&str> = queue
        .channel()
        .try_iter()
        .next()
        .expect("a batch")
        .iter()
        .map(|m| match m {
            Incoming::Flow { .. } => "flow",
            Incoming::Garbled(_) => "garbled",
            _ => "other",
        })
        .collect();
    assert_eq!(first, ["flow", "garbled", "flow"]);
}

/// Once the reader lost events, it fails closed for pickups: nothing is from before the
/// helper, and a pickup at the peer's packet of a tuple it never saw open is held as opened
/// here (its SYN may have been among the lost).
#[test]
fn after_lost_events_a_pickup_is_neither_exempt_nor_taken_for_inbound() {
    // The captured NEW event, its TCP state made ESTABLISHED: a pickup under way.
    let mut pickup = TCP4_NEW.to_vec();
    assert_eq!(
        pickup[0xa0], 1,
        "CTA_PROTOINFO_TCP_STATE: SYN_SENT in the capture"
    );
    pickup[0xa0] = 3;
    let Ok(Message::Flow(flow)) = parse_datagram(&pickup).remove(0) else {
        panic!("the patched message is a flow");
    };
    assert_eq!(flow.tcp_state, Some(3));
    // This machine is the flow's destination: the pickup came in at the peer's packet.
    let early = Early::new(Config::default(), LocalAddrs::new([flow.orig.dst]), Nobody);
    let enobufs = crate::source::conntrack::enobufs_datagram();
    let wakeups = [vec![pickup.clone()], vec![enobufs], vec![pickup]];
    let seen: Vec<(bool, bool)> = read_all(wakeups, early)
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Incoming::Flow { flow, .. } => Some((flow.began_before, flow.reply_seen_from_syn)),
            _ => None,
        })
        .collect();
    // Before the loss (no list taken): may be from before, not known as ours. After it:
    // from before no more, and held as this machine's.
    assert_eq!(seen, [(true, false), (false, true)]);
}
