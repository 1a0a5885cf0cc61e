//! The helper's main loop: one thread that owns the pipeline and the output.
//!
//! Everything else runs on threads of its own and feeds a channel: the reader's flows (see
//! [`crate::source::reader`]), stdin commands, signals, address changes and the DNS capture's
//! troubles. The loop selects over them, runs each flow through the [`Pipeline`] and writes
//! what it reports, and sends the reader the settings its early attribution must follow. It
//! has no timer of its own but the one the names ask for ([`crate::names::Names::due`]), so
//! an idle helper sleeps until something happens. It owns no OS resource itself, so
//! it is tested with a scripted event source and an in-memory writer.

use std::io::Write;
use std::time::Instant;

use crossbeam_channel::{select, Receiver};

use crate::attribution::Attributor;
use crate::commands::{Command, CommandError, HEARTBEAT_TIMEOUT};
use crate::direction::LocalAddrs;
use crate::event::Event;
use crate::output::Output;
use crate::pipeline::{Outcome, Pipeline};
use crate::source::queue::FlowReceiver;
use crate::source::reader::{Batch, EarlyUpdates, Incoming};

/// One line read from stdin: a command, a line that was not one, or `None` at end of input.
pub type CommandLine = Option<Result<Command, CommandError>>;

/// Why the main loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    StdinClosed,
    Signal(i32),
    StdoutClosed,
    ReaderFailed(String),
    /// Heartbeats stopped coming (see [`Command::Heartbeat`]).
    Silent,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::StdinClosed => f.write_str("stdin closed"),
            Stop::Signal(n) => write!(f, "signal {n}"),
            Stop::StdoutClosed => f.write_str("stdout closed"),
            Stop::ReaderFailed(e) => f.write_str(e),
            Stop::Silent => write!(
                f,
                "no heartbeat for {} s: the applet is gone",
                HEARTBEAT_TIMEOUT.as_secs()
            ),
        }
    }
}

/// What the loop listens to, and where it sends the reader's settings.
pub struct Inputs {
    pub flows: FlowReceiver,
    pub cmds: Receiver<CommandLine>,
    pub sigs: Receiver<i32>,
    pub addrs: Receiver<LocalAddrs>,
    pub early: std::sync::Arc<EarlyUpdates>,
    /// [`HEARTBEAT_TIMEOUT`], but in tests.
    pub heartbeat_timeout: std::time::Duration,
}

/// Who is speaking, for the hello line.
pub struct Speaker {
    pub version: String,
    pub hostname: String,
    pub pid: u32,
}

/// Writes the hello line and the problems met while starting, then serves until an input
/// ends it. `debug` prints why each flow was not reported, on stderr.
pub fn serve<A: Attributor, W: Write>(
    pipeline: &mut Pipeline<A>,
    out: &mut Output<W>,
    inputs: &Inputs,
    speaker: Speaker,
    startup: Vec<String>,
    debug: bool,
) -> Stop {
    let names_bell = pipeline.names_mut().bell();
    let hello = Event::Hello {
        version: speaker.version,
        hostname: speaker.hostname,
        pid: speaker.pid,
        config: Box::new(pipeline.config().clone()),
    };
    if out.emit(&hello).is_err() {
        return Stop::StdoutClosed;
    }
    for message in startup {
        if out.emit(&Event::Error { message }).is_err() {
            return Stop::StdoutClosed;
        }
    }
    if out.flush().is_err() {
        return Stop::StdoutClosed;
    }
    // Armed by the first heartbeat: when the next one is due at the latest.
    let mut heard: Option<Instant> = None;
    loop {
        let silent = heard.map_or_else(crossbeam_channel::never, |t| {
            crossbeam_channel::at(t + inputs.heartbeat_timeout)
        });
        let names_due = pipeline
            .names_mut()
            .due()
            .map_or_else(crossbeam_channel::never, crossbeam_channel::at);
        let ev = select! {
            recv(inputs.sigs) -> s => return Stop::Signal(s.unwrap_or(libc::SIGTERM)),
            recv(names_bell) -> _ => match names_tick(pipeline, out) {
                Ok(()) => None,
                Err(stop) => return stop,
            },
            recv(names_due) -> _ => match names_tick(pipeline, out) {
                Ok(()) => None,
                Err(stop) => return stop,
            },
            recv(silent) -> _ => return Stop::Silent,
            recv(inputs.cmds) -> c => match c {
                Ok(Some(Ok(Command::Heartbeat))) => {
                    heard = Some(Instant::now());
                    None
                }
                Ok(Some(Ok(cmd))) => {
                    let ack = pipeline.command(cmd);
                    let cfg = Box::new(pipeline.config().clone());
                    inputs.early.set_config(cfg);
                    Some(ack)
                }
                Ok(Some(Err(e))) => Some(Event::Error { message: e.to_string() }),
                Ok(None) | Err(_) => return Stop::StdinClosed,
            },
            recv(inputs.addrs) -> a => {
                if let Ok(a) = a {
                    inputs.early.set_addrs(a.clone());
                    pipeline.set_addrs(a);
                }
                None
            },
            recv(inputs.flows.channel()) -> f => match f {
                Ok(batch) => {
                    let (last, n) = (last_flow(&batch), batch.len());
                    for (i, incoming) in batch.into_iter().enumerate() {
                        // Only the last flow of a batch, with nothing queued behind it, may
                        // wait (for a PTR answer): the others would hold up those after.
                        let may_wait = Some(i) == last && inputs.flows.is_empty();
                        match flow_event(pipeline, out, incoming, may_wait, debug) {
                            Ok(Some(ev)) => {
                                if out.emit(&ev).is_err() {
                                    return Stop::StdoutClosed;
                                }
                            }
                            Ok(None) => {}
                            Err(stop) => return stop,
                        }
                    }
                    // Counted out once done: the bound is on flows not yet finished.
                    inputs.flows.taken(n);
                    None
                }
                Err(_) => return Stop::ReaderFailed("the conntrack reader stopped".into()),
            },
        };
        if let Some(ev) = ev {
            if out.emit(&ev).is_err() {
                return Stop::StdoutClosed;
            }
        }
        // Lines go out in one write per batch while a burst is queued, and at once otherwise.
        if inputs.flows.is_empty() && out.flush().is_err() {
            return Stop::StdoutClosed;
        }
    }
}

/// Where the last flow of `batch` is: the one flow of it that may wait.
fn last_flow(batch: &Batch) -> Option<usize> {
    batch
        .iter()
        .rposition(|m| matches!(m, Incoming::Flow { .. }))
}

/// Takes in the DNS capture's troubles and tells them now, not with the next flow, which may
/// be long in coming.
fn names_tick<A: Attributor, W: Write>(
    pipeline: &mut Pipeline<A>,
    out: &mut Output<W>,
) -> Result<(), Stop> {
    pipeline.names_mut().tick(Instant::now());
    for message in pipeline.take_notices() {
        out.emit(&Event::Error { message })
            .map_err(|_| Stop::StdoutClosed)?;
    }
    Ok(())
}

/// What one message of the reader becomes.
fn flow_event<A: Attributor, W: Write>(
    pipeline: &mut Pipeline<A>,
    out: &mut Output<W>,
    incoming: Incoming,
    may_wait: bool,
    debug: bool,
) -> Result<Option<Event>, Stop> {
    Ok(match incoming {
        Incoming::Flow {
            flow,
            at,
            read,
            early,
        } => {
            let outcome = pipeline.flow_with(&flow, at, read, early.map(|b| *b), may_wait);
            for message in pipeline.take_notices() {
                out.emit(&Event::Error { message })
                    .map_err(|_| Stop::StdoutClosed)?;
            }
            match outcome {
                Outcome::Report(c) => Some(Event::Connection(c)),
                other => {
                    if debug {
                        let o = &flow.orig;
                        eprintln!(
                            "debug: {:?} {} {}:{} -> {}:{}: {:?}",
                            flow.event, o.proto, o.src, o.sport, o.dst, o.dport, other
                        );
                    }
                    None
                }
            }
        }
        Incoming::Lost(count) => Some(Event::Lost {
            count,
            reason: "kernel".into(),
        }),
        Incoming::Reopened(why) => Some(Event::Error {
            message: format!(
                "conntrack socket reopened after: {why}; flows in the gap are not counted"
            ),
        }),
        Incoming::Garbled(why) => Some(Event::Error {
            message: format!("unparsable conntrack message skipped: {why}"),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::Attribution;
    use crate::config::Config;
    use crate::direction::Sides;
    use crate::names::Names;
    use crate::output::Format;
    use crate::source::conntrack::{parse_datagram, Message};
    use crate::source::reader::testing::{Everyone, Script};
    use crate::source::reader::{self, Early};
    use crossbeam_channel::{unbounded, Sender};
    use serde_json::Value;
    use std::collections::VecDeque;

    const TCP4_NEW: &[u8] = include_bytes!("../tests/data/tcp4_new.bin");

    /// Names nobody: whatever is named came from the reader's early attribution.
    struct Nobody;
    impl Attributor for Nobody {
        fn attribute(&mut self, _: &Sides) -> Option<Attribution> {
            None
        }
    }

    fn local_addrs() -> LocalAddrs {
        let Ok(Message::Flow(flow)) = parse_datagram(TCP4_NEW).remove(0) else {
            panic!("the captured message is a flow");
        };
        LocalAddrs::new([flow.orig.src])
    }

    fn speaker() -> Speaker {
        Speaker {
            version: "9.9.9".into(),
            hostname: "box".into(),
            pid: 4242,
        }
    }

    fn lines(out: Output<Vec<u8>>) -> Vec<Value> {
        String::from_utf8(out.into_inner())
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }

    /// The channels of a loop whose inputs the test holds open.
    struct Held {
        cmds: Sender<CommandLine>,
        sigs: Sender<i32>,
        _addrs: Sender<LocalAddrs>,
        early: std::sync::Arc<EarlyUpdates>,
    }

    fn inputs(flows: FlowReceiver) -> (Inputs, Held) {
        let (cmds, cmd_rx) = unbounded();
        let (sigs, sig_rx) = unbounded();
        let (addrs, addr_rx) = unbounded();
        let early = std::sync::Arc::new(EarlyUpdates::default());
        let early_tx = early.clone();
        let i = Inputs {
            flows,
            cmds: cmd_rx,
            sigs: sig_rx,
            addrs: addr_rx,
            early: early_tx,
            heartbeat_timeout: std::time::Duration::from_millis(300),
        };
        let held = Held {
            cmds,
            sigs,
            _addrs: addrs,
            early,
        };
        (i, held)
    }

    #[test]
    fn a_scripted_flow_is_reported_after_the_hello_and_a_failed_reader_ends_the_loop() {
        let mut cfg = Config::default();
        cfg.filter.show_unknown = true;
        let (flow_tx, flow_rx) = crate::source::queue::flow_queue(16);
        let upd_rx = std::sync::Arc::new(EarlyUpdates::default());
        let script = Script {
            steps: VecDeque::from([Ok(TCP4_NEW.to_vec())]),
            reopened: 0,
            lost: 0,
        };
        let early = Early::new(cfg.clone(), local_addrs(), Everyone);
        let reader = std::thread::spawn(move || reader::run(script, flow_tx, early, upd_rx, false));
        let (inputs, _held) = inputs(flow_rx);
        let mut p = Pipeline::new(
            cfg,
            local_addrs(),
            Nobody,
            Names::new(crate::names::capture::Shared::without_capture()),
        );
        let mut out = Output::new(Format::Json, Vec::new(), None, false, "box".into());
        let stop = serve(
            &mut p,
            &mut out,
            &inputs,
            speaker(),
            vec!["hook off".into()],
            false,
        );
        reader.join().expect("the reader ends");
        assert_eq!(
            stop,
            Stop::ReaderFailed("the conntrack reader stopped".into())
        );
        let l = lines(out);
        assert_eq!(l[0]["type"], "hello");
        assert_eq!(l[0]["pid"], 4242);
        assert_eq!(l[0]["hostname"], "box");
        assert_eq!(l[1]["type"], "error");
        assert_eq!(l[1]["message"], "hook off");
        assert_eq!(l[2]["type"], "connection");
        assert_eq!(l[2]["remote_port"], 8080);
        assert_eq!(
            l[2]["process"]["comm"], "init",
            "named by the reader: {}",
            l[2]
        );
        // The script's socket then fails: each reopening is told, and the last failure ends it.
        assert!(l[3..].iter().all(|e| e["type"] == "error"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("reopened"))));
        assert!(!l[3..].is_empty());
    }

    #[test]
    fn commands_are_acknowledged_and_reach_the_reader_and_end_of_stdin_stops() {
        let (_flow_tx, flow_rx) = crate::source::queue::flow_queue(1);
        let (inputs, held) = inputs(flow_rx);
        held.cmds.send(Some(Ok(Command::Pause))).expect("send");
        held.cmds
            .send(Some(Err(CommandError::Invalid("nope".into()))))
            .expect("send");
        held.cmds.send(None).expect("send");
        let mut p = Pipeline::new(
            Config::default(),
            local_addrs(),
            Nobody,
            Names::new(crate::names::capture::Shared::without_capture()),
        );
        let mut out = Output::new(Format::Json, Vec::new(), None, false, "box".into());
        let stop = serve(&mut p, &mut out, &inputs, speaker(), vec![], false);
        assert_eq!(stop, Stop::StdinClosed);
        let l = lines(out);
        let kinds: Vec<&str> = l.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(kinds, ["hello", "ack", "error"]);
        assert_eq!(l[1]["cmd"], "pause");
        assert_eq!(l[2]["message"], "bad command: nope");
        assert!(
            held.early.take().0.is_some(),
            "the reader gets the new settings"
        );
    }

    #[test]
    fn heartbeats_are_not_acknowledged_and_their_silence_ends_the_loop() {
        let (_flow_tx, flow_rx) = crate::source::queue::flow_queue(1);
        let (inputs, held) = inputs(flow_rx);
        let mut p = Pipeline::new(
            Config::default(),
            local_addrs(),
            Nobody,
            Names::new(crate::names::capture::Shared::without_capture()),
        );
        // Three heartbeats 100 ms apart keep it going; then nothing for the timeout.
        let cmds = held.cmds.clone();
        let beater = std::thread::spawn(move || {
            for _ in 0..3 {
                let _ = cmds.send(Some(Ok(Command::Heartbeat)));
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        let started = Instant::now();
        let mut out = Output::new(Format::Json, Vec::new(), None, false, "box".into());
        let stop = serve(&mut p, &mut out, &inputs, speaker(), vec![], false);
        beater.join().expect("the beater ends");
        assert_eq!(stop, Stop::Silent);
        assert!(started.elapsed() >= std::time::Duration::from_millis(500));
        let l = lines(out);
        assert_eq!(l.len(), 1, "only the hello: {l:?}");
        // Without a first heartbeat, silence is fine (sudo, systemd, old applets).
    }

    #[test]
    fn the_captures_troubles_are_told_when_it_rings_with_no_flow_coming() {
        let (_flow_tx, flow_rx) = crate::source::queue::flow_queue(1);
        let (inputs, held) = inputs(flow_rx);
        let shared = crate::names::capture::Shared::without_capture();
        let mut p = Pipeline::new(
            Config::default(),
            local_addrs(),
            Nobody,
            Names::new(shared.clone()),
        );
        shared.trouble(1234, None);
        // The signal comes later, so that the loop has met the bell first.
        let sigs = held.sigs.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let _ = sigs.send(libc::SIGTERM);
        });
        let mut out = Output::new(Format::Json, Vec::new(), None, false, "box".into());
        let stop = serve(&mut p, &mut out, &inputs, speaker(), vec![], false);
        stopper.join().expect("the stopper ends");
        assert_eq!(stop, Stop::Signal(libc::SIGTERM));
        let l = lines(out);
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(l[1]["type"], "error");
        assert!(
            l[1]["message"]
                .as_str()
                .is_some_and(|m| m.contains("dropped 1234 packets")),
            "{}",
            l[1]
        );
    }

    #[test]
    fn only_the_last_flow_of_a_batch_may_wait_whatever_follows_it() {
        let Ok(Message::Flow(flow)) = parse_datagram(TCP4_NEW).remove(0) else {
            panic!("the captured message is a flow");
        };
        let f = || Incoming::Flow {
            flow: flow.clone(),
            at: std::time::SystemTime::now(),
            read: Instant::now(),
            early: None,
        };
        assert_eq!(last_flow(&vec![f(), f(), Incoming::Lost(3)]), Some(1));
        assert_eq!(
            last_flow(&vec![Incoming::Garbled("x".into()), f()]),
            Some(1)
        );
        assert_eq!(last_flow(&vec![Incoming::Lost(1)]), None);
        assert_eq!(last_flow(&Vec::new()), None);
    }

    #[test]
    fn a_signal_stops_the_loop() {
        let (_flow_tx, flow_rx) = crate::source::queue::flow_queue(1);
        let (inputs, held) = inputs(flow_rx);
        held.sigs.send(libc::SIGTERM).expect("send");
        let mut p = Pipeline::new(
            Config::default(),
            local_addrs(),
            Nobody,
            Names::new(crate::names::capture::Shared::without_capture()),
        );
        let mut out = Output::new(Format::Json, Vec::new(), None, false, "box".into());
        let stop = serve(&mut p, &mut out, &inputs, speaker(), vec![], false);
        assert_eq!(stop, Stop::Signal(libc::SIGTERM));
        assert_eq!(lines(out).len(), 1, "the hello line only");
    }
}
