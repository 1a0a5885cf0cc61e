//! Names for remote addresses: what the connecting program itself looked up before it
//! connected.
//!
//! [`dns`] parses DNS packets; [`capture`] is the thread that sees the queries this machine
//! sends and the answers it receives; [`table`] decides which answers to believe and files
//! each name under the process that asked; [`reverse`] asks PTR questions on a worker
//! thread, when the configuration wants it. [`Names`] owns them all, so the pipeline asks one
//! thing for a name and never reads a socket or starts a thread itself.

pub mod capture;
pub mod dns;
pub mod reverse;
pub mod table;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config;
use crate::event::HostSource;
use capture::Shared;
use reverse::Reverse;

/// At most one notice of the capture's drops in this time, so a flood makes one a minute.
const DROPS_EVERY: Duration = Duration::from_secs(60);

/// Where the system's resolvers are listed: the resolver configuration, and for
/// systemd-resolved the upstream servers its stub forwards to.
pub const RESOLV_CONFS: [&str; 2] = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"];

/// Every `nameserver` of a resolv.conf text.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next()?.parse().ok())?
        })
        .collect()
}

/// The resolver files, and their modification times when they were last read.
#[derive(Debug, Default)]
pub struct ResolvConfs {
    files: Vec<(PathBuf, Option<SystemTime>)>,
}

impl ResolvConfs {
    pub fn new(files: Vec<PathBuf>) -> ResolvConfs {
        ResolvConfs {
            files: files.into_iter().map(|f| (f, None)).collect(),
        }
    }

    /// Every server the files list, when one of them changed since the last call (the first
    /// call reads them); `None` when none did. Two `stat` calls, so cheap enough to make
    /// before every batch of answers.
    pub fn changed(&mut self) -> Option<Vec<IpAddr>> {
        let mut changed = false;
        for (path, seen) in &mut self.files {
            let mtime = std::fs::metadata(&*path).and_then(|m| m.modified()).ok();
            if mtime != *seen {
                changed = true;
                *seen = mtime;
            }
        }
        changed.then(|| {
            self.files
                .iter()
                .filter_map(|(p, _)| std::fs::read_to_string(p).ok())
                .flat_map(|t| nameservers(&t))
                .collect()
        })
    }
}

/// Where the names come from.
pub struct Names {
    shared: Arc<Shared>,
    /// Started the first time the configuration asks for reverse lookups (on the pipeline's
    /// thread, so the worker inherits its restricted capabilities); `Err` once starting failed.
    reverse: Option<Result<Reverse, ()>>,
    notices: Vec<String>,
    /// When drops of the capture were last told (see [`DROPS_EVERY`]).
    told_drops: Option<Instant>,
    dropped: u64,
}

impl Names {
    /// Names from `shared` (a running capture, or [`Shared::without_capture`]), believing
    /// the resolvers listed in [`RESOLV_CONFS`].
    pub fn new(shared: Arc<Shared>) -> Names {
        Names::with_resolv_confs(shared, RESOLV_CONFS.iter().map(PathBuf::from).collect())
    }

    /// As [`Names::new`], with other resolver files (tests).
    pub fn with_resolv_confs(shared: Arc<Shared>, files: Vec<PathBuf>) -> Names {
        shared.set_resolv_confs(ResolvConfs::new(files));
        let mut n = Names {
            shared,
            reverse: None,
            notices: Vec::new(),
            told_drops: None,
            dropped: 0,
        };
        n.tick(Instant::now());
        n
    }

    /// Re-reads the resolver files when they changed (the capture does too, before it judges
    /// answers); takes the capture's troubles in.
    pub fn tick(&mut self, now: Instant) {
        self.shared.refresh_resolvers();
        let (dropped, stopped) = self.shared.take_trouble();
        self.dropped += dropped;
        if let Some(why) = stopped {
            self.notices
                .push(format!("{why}; connections are reported without names"));
        }
        if self.dropped > 0
            && self
                .told_drops
                .is_none_or(|t| now.duration_since(t) >= DROPS_EVERY)
        {
            self.notices.push(format!(
                "the DNS capture dropped {} packets (its buffer was full): some connections may be shown without their name",
                std::mem::take(&mut self.dropped)
            ));
            self.told_drops = Some(now);
        }
    }

    /// Receives a message when the capture has trouble to tell (drops, a stop): call
    /// [`Names::tick`] then. The main loop waits on it, so an idle helper does not poll.
    pub fn bell(&self) -> crossbeam_channel::Receiver<()> {
        self.shared.bell()
    }

    /// When [`Names::tick`] is due although the bell did not ring: drops held back by the
    /// one-notice-a-minute limit may be told then.
    pub fn due(&self) -> Option<Instant> {
        if self.dropped == 0 {
            return None;
        }
        Some(
            self.told_drops
                .map_or_else(Instant::now, |t| t + DROPS_EVERY),
        )
    }

    /// Waits until the answers that arrived before `since` are taken in (bounded; see
    /// [`capture::Shared::catch_up`]).
    pub fn catch_up(&mut self, since: Instant) {
        self.shared.catch_up(since);
    }

    /// The name process `pid` looked up over DNS for `ip`, and where the answer came from.
    pub fn dns_name(
        &mut self,
        pid: u32,
        ip: &IpAddr,
        now: Instant,
    ) -> Option<(String, HostSource)> {
        self.shared.with_table(|t| t.name_for(pid, ip, now))
    }

    /// The shared table, for tests and tools that feed it by hand.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The PTR name of `ip` when `cfg` asks for reverse lookups; waits for the worker at most
    /// the configured timeout, and only when `may_wait`.
    pub fn ptr_name(&mut self, ip: &IpAddr, cfg: &config::Names, may_wait: bool) -> Option<String> {
        if !cfg.reverse_dns {
            return None;
        }
        self.reverse(cfg)?.name_of(ip, may_wait, Instant::now())
    }

    fn reverse(&mut self, cfg: &config::Names) -> Option<&mut Reverse> {
        if self.reverse.is_none() {
            let server = cfg.resolver.or_else(|| {
                std::fs::read_to_string(RESOLV_CONFS[0])
                    .ok()
                    .and_then(|t| nameservers(&t).first().copied())
            });
            let timeout = Duration::from_millis(cfg.reverse_timeout_ms);
            self.reverse = Some(match server {
                Some(ip) => Reverse::start(SocketAddr::new(ip, 53), timeout).map_err(|e| {
                    self.notices.push(format!("reverse DNS is off: {e}"));
                }),
                None => {
                    self.notices.push(
                        "reverse DNS is off: no resolver (names.resolver, /etc/resolv.conf)".into(),
                    );
                    Err(())
                }
            });
        }
        self.reverse.as_mut().and_then(|r| r.as_mut().ok())
    }

    /// Things to tell the reader (a reverse-DNS worker that could not start).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// How full the map is and how many packets it refused, for `--debug`.
    pub fn tables(&self) -> String {
        self.shared
            .with_table(|t| format!("DNS names {} ({:?})", t.len(), t.stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nameserver_of_resolv_conf() {
        assert_eq!(
            nameservers("# x\nsearch lan\nnameserver 127.0.0.53\nnameserver 9.9.9.9\n"),
            vec![
                "127.0.0.53".parse::<IpAddr>().expect("ip"),
                "9.9.9.9".parse().expect("ip")
            ]
        );
        assert!(nameservers("nameserver bogus\n").is_empty());
    }

    #[test]
    fn drops_ring_the_bell_and_are_told_at_once_then_once_a_minute() {
        let mut n = Names::new(Shared::without_capture());
        let bell = n.bell();
        assert!(bell.try_recv().is_err());
        assert_eq!(n.due(), None, "nothing to tell, no timer");
        let t0 = Instant::now();
        n.shared().trouble(3, None);
        assert!(bell.try_recv().is_ok());
        n.tick(t0);
        let told = n.take_notices();
        assert!(
            told.len() == 1 && told[0].contains("dropped 3 packets"),
            "{told:?}"
        );
        assert_eq!(n.due(), None);
        // More within the minute: held back until it is over, and the timer says when.
        n.shared().trouble(2, None);
        n.shared().trouble(4, None);
        assert!(bell.try_recv().is_ok());
        assert!(bell.try_recv().is_err(), "one ring for both");
        n.tick(t0 + Duration::from_secs(1));
        assert!(n.take_notices().is_empty());
        assert_eq!(n.due(), Some(t0 + DROPS_EVERY));
        n.tick(t0 + DROPS_EVERY);
        let told = n.take_notices();
        assert!(
            told.len() == 1 && told[0].contains("dropped 6 packets"),
            "{told:?}"
        );
        assert_eq!(n.due(), None);
        // A stopped capture is told on the next tick, whatever the minute.
        n.shared()
            .trouble(0, Some("the DNS capture stopped: gone".into()));
        assert!(bell.try_recv().is_ok());
        n.tick(t0 + DROPS_EVERY);
        let told = n.take_notices();
        assert!(
            told.len() == 1 && told[0].contains("stopped: gone"),
            "{told:?}"
        );
    }

    #[test]
    fn answers_from_the_listed_resolvers_are_dns_and_a_changed_file_is_read_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let conf = dir.path().join("resolv.conf");
        std::fs::write(&conf, "nameserver 10.0.0.53\n").expect("write");
        let mut n = Names::with_resolv_confs(Shared::without_capture(), vec![conf.clone()]);
        let ask = |n: &mut Names, server: &str, id: u16| {
            let key = table::QueryKey {
                proto: 17,
                client: "10.0.0.1:40000".parse().expect("addr"),
                server: server.parse().expect("addr"),
                id,
                question: ("a.test".into(), 1),
            };
            let msg = dns::Message {
                id,
                response: true,
                question: ("a.test".into(), 1),
                addrs: vec![("10.9.9.9".parse().expect("ip"), Duration::from_secs(60))],
            };
            let now = Instant::now();
            n.shared().with_table(|t| {
                t.query(key.clone(), Some(7), now);
                t.answer(&key, &msg, now)
            });
            n.dns_name(7, &"10.9.9.9".parse().expect("ip"), now)
                .map(|(_, source)| source)
        };
        assert_eq!(ask(&mut n, "10.0.0.53:53", 1), Some(HostSource::Dns));
        assert_eq!(
            ask(&mut n, "10.0.0.54:53", 2),
            Some(HostSource::OwnResolver)
        );
        // The file changes (a new network): the new server is the system's now.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&conf, "nameserver 10.0.0.54\n").expect("write");
        n.tick(Instant::now());
        assert_eq!(ask(&mut n, "10.0.0.54:53", 3), Some(HostSource::Dns));
        assert_eq!(
            ask(&mut n, "10.0.0.53:53", 4),
            Some(HostSource::OwnResolver)
        );
    }
}
