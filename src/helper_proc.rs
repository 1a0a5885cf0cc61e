//! The helper processes: started through pkexec, directly, or over ssh; read line by line;
//! restarted with back-off when they die; never left running.
//!
//! Each helper's stdout is read by a thread that parses [`Event`]s and sends them to the main
//! loop tagged with the link number and a generation number (so lines of a dead helper are
//! told apart from its successor's). Commands go to its stdin. Closing stdin is how a helper
//! is stopped: it removes its nftables table and exits within a second, even when it runs as
//! root through pkexec where we could not signal it.
//!
//! [`Link`] is one helper's process and state; [`Helpers`] is all of them, the part the main
//! loop drives: it turns the reader threads' [`Msg`]s into [`Report`]s and carries out the
//! starts, restarts and commands. What to send and what to tell the person is decided in
//! `links`, not here.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conntrack_tray_helper::{commands, Event};
use crossbeam_channel::Sender;

use crate::refusal;

mod launch;
pub use launch::{distinct_targets, helper_path, Launch, REMOTE_HELPER, SSH_OPTIONS};

/// A message from a helper's reader thread.
#[derive(Debug, Clone)]
pub enum Msg {
    Event {
        link: usize,
        gen: u64,
        event: Box<Event>,
    },
    /// A line that was not a valid event (shown once per helper, not fatal).
    Garbage { link: usize, gen: u64, line: String },
    /// Its stdout closed: it exited or is about to.
    Closed { link: usize, gen: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Starting,
    Running,
    /// Will be started again at the given time.
    Restarting {
        at: Instant,
        why: String,
    },
    /// Refused for good (the password prompt dismissed, a key that does not log in, sudo
    /// asking for a password, no helper): not retried until the person asks. `why` is for a
    /// person, and ends with the fix.
    Refused {
        why: String,
    },
    Stopped,
}

/// The last lines a helper's process wrote on stderr, to say why it failed.
const STDERR_KEPT: usize = 20;
/// How much of the helper's output one read takes. A writer to a full pipe is woken by
/// every read that frees room; reads of 8 KiB (the default) in a burst woke the helper every
/// few lines, a quarter of its pipeline thread's CPU (the burst benchmark). With 1 MiB a
/// read takes all the pipe holds (the helper asks for a 1 MiB pipe). The buffer's pages
/// are touched only as a burst fills them.
const READ_BYTES: usize = 1 << 20;
/// How long a closed helper's stderr is waited for, to its end (a process it left behind may
/// hold the pipe open).
const STDERR_GRACE: Duration = Duration::from_millis(500);

pub struct Link {
    pub launch: Launch,
    pub host: String,
    pub state: State,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    gen: u64,
    backoff: Duration,
    pub restarts: u32,
    /// The host's own name, from its hello (a detail: the label is what the person typed).
    pub hostname: Option<String>,
    /// Since when and why the host is not watched, when it was watched before.
    down: Option<(Instant, String)>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Disconnected once the stderr reader has read to the end (its sender dropped).
    stderr_eof: Option<crossbeam_channel::Receiver<()>>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A helper started through pkexec that stopped is started again only this long after the
/// person was told (the password prompt must never come out of the blue), unless they choose
/// to start it at once or not at all.
pub const PASSWORD_NOTICE: Duration = Duration::from_secs(15);

impl Link {
    pub fn new(launch: Launch) -> Link {
        Link {
            host: launch.host(),
            launch,
            state: State::Stopped,
            child: None,
            stdin: None,
            gen: 0,
            backoff: Duration::from_secs(1),
            restarts: 0,
            hostname: None,
            down: None,
            stderr: Arc::new(Mutex::new(VecDeque::new())),
            stderr_eof: None,
        }
    }

    pub fn gen(&self) -> u64 {
        self.gen
    }

    /// Starts the helper; its lines arrive on `tx` as [`Msg`]s for link number `link`.
    pub fn start(&mut self, link: usize, tx: &Sender<Msg>) -> std::io::Result<()> {
        self.gen += 1;
        let gen = self.gen;
        let mut child = self
            .launch
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        if let Some(err) = child.stderr.take() {
            self.read_stderr(link, err)?;
        }
        self.stdin = child.stdin.take();
        self.child = Some(child);
        self.state = State::Starting;
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("helper-{link}"))
            .spawn(move || {
                for line in BufReader::with_capacity(READ_BYTES, stdout).lines() {
                    let Ok(line) = line else { break };
                    let msg = match serde_json::from_str::<Event>(&line) {
                        Ok(event) => Msg::Event {
                            link,
                            gen,
                            event: Box::new(event),
                        },
                        Err(_) => Msg::Garbage {
                            link,
                            gen,
                            line: line.chars().take(200).collect(),
                        },
                    };
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
                let _ = tx.send(Msg::Closed { link, gen });
            })?;
        Ok(())
    }

    /// Keeps the last lines of the helper's (or ssh's, or sudo's) stderr, to classify a
    /// failure, and passes them on to the applet's own stderr.
    fn read_stderr(&mut self, link: usize, err: std::process::ChildStderr) -> std::io::Result<()> {
        let kept = self.stderr.clone();
        if let Ok(mut k) = kept.lock() {
            k.clear();
        }
        let host = crate::text::host(&self.host);
        let (eof, eof_rx) = crossbeam_channel::bounded::<()>(0);
        self.stderr_eof = Some(eof_rx);
        std::thread::Builder::new()
            .name(format!("helper-{link}-err"))
            .spawn(move || {
                let _eof = eof;
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("conntrack-tray: {host}: {}", crate::text::line(&line));
                    if let Ok(mut k) = kept.lock() {
                        if k.len() == STDERR_KEPT {
                            k.pop_front();
                        }
                        k.push_back(line);
                    }
                }
            })?;
        Ok(())
    }

    /// Sends one command in the helper's own wire form; a failure to write means the helper
    /// is gone (its Closed follows).
    pub fn send(&mut self, command: &commands::Command) {
        let line = match command.to_line() {
            Ok(line) => line,
            Err(e) => {
                eprintln!(
                    "conntrack-tray: cannot write the {} command: {e}",
                    command.name()
                );
                return;
            }
        };
        if let Some(stdin) = &mut self.stdin {
            if writeln!(stdin, "{line}")
                .and_then(|()| stdin.flush())
                .is_err()
            {
                self.stdin = None;
            }
        }
    }

    /// The helper said hello: it is running, and the back-off starts again from a second.
    /// Returns how long and why the host was not watched, if it was watched before.
    pub fn running(&mut self, now: Instant) -> Option<(Duration, String)> {
        self.state = State::Running;
        self.backoff = Duration::from_secs(1);
        self.down
            .take()
            .map(|(since, why)| (now.saturating_duration_since(since), why))
    }

    /// Its stdout closed: reap it and decide what next. Returns the exit code.
    pub fn closed(&mut self, now: Instant) -> Option<i32> {
        self.stdin = None;
        let status = self.child.take().and_then(|mut c| {
            // It closed stdout, so it is exiting; give it a moment, then make sure.
            for _ in 0..50 {
                if let Ok(Some(s)) = c.try_wait() {
                    return Some(s);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            c.wait().ok()
        });
        // Its last words may still be in the pipe: the reader thread can lag behind the exit
        // (on a busy machine "Permission denied" came after the close, and a refusal was
        // taken for a lost connection and tried again).
        if let Some(eof) = self.stderr_eof.take() {
            let _ = eof.recv_timeout(STDERR_GRACE);
        }
        let code = status.and_then(|s| s.code());
        let was_running = self.state == State::Running;
        let pkexec = matches!(self.launch, Launch::Pkexec(_));
        let lines: Vec<String> = self
            .stderr
            .lock()
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default();
        let why = match code {
            Some(c) => format!("exited with status {c}"),
            None => "was killed".into(),
        };
        if pkexec && !was_running && matches!(code, Some(126) | Some(127)) {
            self.state = State::Refused {
                why: "not authorized".into(),
            };
            return code;
        }
        let refusal = match &self.launch {
            Launch::Ssh { .. } => refusal::classify(&lines, code),
            _ => None,
        };
        // The host is not watched from now on (unless this outage began earlier), for the
        // recovery notice.
        if self.down.is_none() {
            let cause = refusal.map_or_else(|| why.clone(), |r| r.reason().to_string());
            self.down = Some((now, cause));
        }
        if let Some(r) = refusal.filter(|r| r.permanent()) {
            self.state = State::Refused {
                why: format!("{}; {}", r.reason(), r.fix(&self.target())),
            };
            return code;
        }
        // Through pkexec a restart may ask for the password: the person is told first.
        let wait = if pkexec && was_running {
            self.backoff.max(PASSWORD_NOTICE)
        } else {
            self.backoff
        };
        self.state = State::Restarting {
            at: now + wait,
            why: refusal.map_or(why, |r| r.reason().to_string()),
        };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        code
    }

    /// The host as the person configured it (`USER@HOST`), or this machine's name.
    pub fn target(&self) -> String {
        match &self.launch {
            Launch::Ssh { target, .. } => target.clone(),
            _ => self.host.clone(),
        }
    }

    /// The host was first not watched at this time, when it was watched before.
    pub fn down_since(&self) -> Option<Instant> {
        self.down.as_ref().map(|(t, _)| *t)
    }

    pub fn due(&self, now: Instant) -> bool {
        matches!(&self.state, State::Restarting { at, .. } if *at <= now)
    }

    /// Stops the helper: closes its stdin (it removes its table and exits), waits up to two
    /// seconds, then kills what is left.
    pub fn stop(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    self.state = State::Stopped;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.state = State::Stopped;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a helper's message means for the applet, once [`Helpers`] has kept its books.
#[derive(Debug)]
pub enum Report {
    /// A line from the helper of link `link`, on `host` (after a hello, the name the helper
    /// gave for its machine).
    Event {
        link: usize,
        host: String,
        event: Box<Event>,
        /// With a hello after an outage: how long the host was not watched, and why.
        recovered: Option<(Duration, String)>,
    },
    /// A line that was not an event.
    Garbage { host: String, line: String },
    /// The helper's stdout closed; it was reaped, and `state` is what happens next.
    /// `asks_password`: it is restarted through pkexec, which may ask for the password.
    Closed {
        link: usize,
        host: String,
        state: State,
        asks_password: bool,
        /// The person has not been told of this outage yet.
        news: bool,
    },
}

/// A helper that could not be started; the text is what the person is told.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the helper for {host}: {source}")]
    Start {
        host: String,
        source: std::io::Error,
    },
    #[error("cannot restart the helper for {host}: {source}")]
    Restart {
        host: String,
        source: std::io::Error,
    },
}

/// Every helper the applet runs, by link number (its place in the list). Their reader
/// threads send to the channel given to [`Helpers::new`].
pub struct Helpers {
    links: Vec<Link>,
    tx: Sender<Msg>,
}

impl Helpers {
    /// The links, none started yet.
    pub fn new(launches: impl IntoIterator<Item = Launch>, tx: Sender<Msg>) -> Helpers {
        Helpers {
            links: launches.into_iter().map(Link::new).collect(),
            tx,
        }
    }

    /// Starts every helper, at launch; one that cannot be started stays stopped (the menu
    /// offers "Start monitoring…").
    pub fn start_all(&mut self) -> Vec<StartError> {
        let mut failed = Vec::new();
        for (i, l) in self.links.iter_mut().enumerate() {
            if let Err(source) = l.start(i, &self.tx) {
                failed.push(StartError::Start {
                    host: l.host.clone(),
                    source,
                });
                l.state = State::Stopped;
            }
        }
        failed
    }

    /// "Start monitoring…": starts the helpers that are stopped or were refused.
    pub fn start_stopped(&mut self) -> Vec<StartError> {
        let mut failed = Vec::new();
        for (i, l) in self.links.iter_mut().enumerate() {
            if matches!(l.state, State::Refused { .. } | State::Stopped) {
                if let Err(source) = l.start(i, &self.tx) {
                    failed.push(StartError::Start {
                        host: l.host.clone(),
                        source,
                    });
                }
            }
        }
        failed
    }

    /// When due (see [`Helpers::next_due`]): restarts the helpers whose back-off is over. One that cannot be
    /// restarted counts as closed again, so it waits a longer back-off.
    pub fn restart_due(&mut self, now: Instant) -> Vec<StartError> {
        let mut failed = Vec::new();
        for (i, l) in self.links.iter_mut().enumerate() {
            if l.due(now) {
                l.restarts += 1;
                if let Err(source) = l.start(i, &self.tx) {
                    failed.push(StartError::Restart {
                        host: l.host.clone(),
                        source,
                    });
                    l.closed(now);
                }
            }
        }
        failed
    }

    /// "Start now": the helper of `link`, waiting to be restarted, is started at once.
    pub fn restart_now(&mut self, link: usize, now: Instant) -> Vec<StartError> {
        if let Some(l) = self.links.get_mut(link) {
            if let State::Restarting { at, .. } = &mut l.state {
                *at = now;
            }
        }
        self.restart_due(now)
    }

    /// "Don't restart": the helper of `link` stays stopped until the person starts it.
    pub fn hold(&mut self, link: usize) {
        if let Some(l) = self.links.get_mut(link) {
            if matches!(l.state, State::Restarting { .. }) {
                l.state = State::Stopped;
            }
        }
    }

    /// When [`Helpers::restart_due`] next has a helper to start.
    pub fn next_due(&self) -> Option<Instant> {
        self.links
            .iter()
            .filter_map(|l| match &l.state {
                State::Restarting { at, .. } => Some(*at),
                _ => None,
            })
            .min()
    }

    /// Keeps the books for a reader thread's message and says what it means; `None` for a
    /// message from a helper that has been replaced since. A hello marks its helper running
    /// and names its host (the remote's own name, over ssh); a close reaps the helper and
    /// decides whether and when it is restarted.
    pub fn receive(&mut self, msg: Msg, now: Instant) -> Option<Report> {
        match msg {
            Msg::Event { link, gen, event } => {
                let l = self.current(link, gen)?;
                let mut recovered = None;
                if let Event::Hello { hostname, .. } = &*event {
                    // Over ssh a detail: the label stays what the person typed (two hosts that
                    // call themselves the same stay apart). This machine's helper names this
                    // machine. `text` sanitizes it where shown.
                    l.hostname = (!hostname.is_empty()).then(|| hostname.clone());
                    if !matches!(l.launch, Launch::Ssh { .. }) && !hostname.is_empty() {
                        l.host = hostname.clone();
                    }
                    recovered = l.running(now);
                }
                Some(Report::Event {
                    link,
                    host: l.host.clone(),
                    event,
                    recovered,
                })
            }
            Msg::Garbage { link, gen, line } => {
                let l = self.current(link, gen)?;
                Some(Report::Garbage {
                    host: l.host.clone(),
                    line,
                })
            }
            Msg::Closed { link, gen } => {
                let l = self.current(link, gen)?;
                let was_down = l.down_since().is_some();
                l.closed(now);
                Some(Report::Closed {
                    link,
                    host: l.host.clone(),
                    state: l.state.clone(),
                    asks_password: matches!(l.launch, Launch::Pkexec(_)),
                    // Told once an outage: when it begins, or when it ends in a refusal.
                    news: !was_down || matches!(l.state, State::Refused { .. }),
                })
            }
        }
    }

    /// Link `link`, if `gen` is its current helper's generation.
    fn current(&mut self, link: usize, gen: u64) -> Option<&mut Link> {
        self.links.get_mut(link).filter(|l| l.gen() == gen)
    }

    /// Sends a command to the helper of link `link` (none if there is no such link).
    pub fn send(&mut self, link: usize, command: &commands::Command) {
        if let Some(l) = self.links.get_mut(link) {
            l.send(command);
        }
    }

    /// Each helper over ssh: its label, and the pid of its ssh process while it runs.
    pub fn ssh_links(&self) -> Vec<(String, Option<u32>)> {
        self.links
            .iter()
            .filter(|l| matches!(l.launch, Launch::Ssh { .. }))
            .map(|l| (l.host.clone(), l.child.as_ref().map(|c| c.id())))
            .collect()
    }

    /// Whether any helper runs over ssh (they get heartbeats).
    pub fn any_remote(&self) -> bool {
        self.links
            .iter()
            .any(|l| matches!(l.launch, Launch::Ssh { .. }))
    }

    /// Sends a heartbeat to every helper running over ssh: one that hears none for
    /// [`commands::HEARTBEAT_TIMEOUT`] exits, so a laptop that vanished without closing the
    /// link leaves no root helper behind. (A local helper sees its stdin close instead.)
    pub fn heartbeat(&mut self) {
        for l in &mut self.links {
            if matches!(l.launch, Launch::Ssh { .. }) && l.state == State::Running {
                l.send(&commands::Command::Heartbeat);
            }
        }
    }

    /// Sends each helper the command `make` makes for its host's label.
    pub fn send_each(&mut self, make: impl Fn(&str) -> commands::Command) {
        for l in &mut self.links {
            let command = make(&l.host);
            l.send(&command);
        }
    }

    /// Sends a command to every helper.
    pub fn send_all(&mut self, command: &commands::Command) {
        for l in &mut self.links {
            l.send(command);
        }
    }

    /// Each link's host and state, in link order.
    pub fn states(&self) -> Vec<(&str, &State)> {
        self.links
            .iter()
            .map(|l| (l.host.as_str(), &l.state))
            .collect()
    }

    /// Each link's label for the status line, with a remote host's own name beside it when
    /// that differs (`nas (backup-vm)`), and its state, in link order.
    pub fn status_states(&self) -> Vec<(String, &State)> {
        self.links
            .iter()
            .map(|l| {
                let label = match (&l.launch, &l.hostname) {
                    (Launch::Ssh { .. }, Some(h)) if *h != l.host => format!("{} ({h})", l.host),
                    _ => l.host.clone(),
                };
                (label, &l.state)
            })
            .collect()
    }

    /// Stops every helper (see [`Link::stop`]).
    pub fn stop_all(&mut self) {
        for l in &mut self.links {
            l.stop();
        }
    }
}

#[cfg(test)]
mod tests;
