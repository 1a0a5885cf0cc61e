//! Names for remote addresses: what the machine looked up before it connected.
//!
//! [`dns`] parses DNS answers and keeps the address → name map; [`capture`] is the packet
//! socket that sees the answers the machine receives; [`reverse`] asks PTR questions on a
//! worker thread, when the configuration wants it. [`Names`] owns all three, so the pipeline
//! asks one thing for a name and never schedules reads or starts threads itself.

pub mod capture;
pub mod dns;
pub mod reverse;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config;
use capture::DnsCapture;
use dns::DnsNames;
use reverse::Reverse;

/// Where the names come from, and when the capture was last read.
pub struct Names {
    dns: DnsNames,
    capture: Option<DnsCapture>,
    /// When the last read of the capture started; none yet, so the first flow (perhaps read
    /// before the main loop started) reads it.
    drained_at: Option<Instant>,
    /// Started the first time the configuration asks for reverse lookups (on the pipeline's
    /// thread, so the worker inherits its restricted capabilities); `Err` once starting failed.
    reverse: Option<Result<Reverse, ()>>,
    notices: Vec<String>,
}

impl Names {
    /// Names from `capture` when there is one; without it only what is fed to [`Names::dns_mut`].
    pub fn new(capture: Option<DnsCapture>) -> Names {
        Names {
            dns: DnsNames::default(),
            capture,
            drained_at: None,
            reverse: None,
            notices: Vec::new(),
        }
    }

    /// Reads the answers waiting in the capture, so its buffer never overflows while no flow
    /// comes to do it (the main loop calls this on a timer).
    pub fn tick(&mut self, now: Instant) {
        if let Some(c) = &mut self.capture {
            self.drained_at = Some(now);
            c.drain(&mut self.dns, now);
        }
    }

    /// Takes in every answer that arrived before a flow read at `read`. Those are queued in
    /// the capture by now; a read started after the flow was read has taken them already, so
    /// in a burst one read serves every flow queued behind it.
    pub fn catch_up(&mut self, read: Instant) {
        if self.drained_at.is_none_or(|d| read > d) {
            self.tick(Instant::now());
        }
    }

    /// The name DNS gave `ip`, while its answer is valid at `now`.
    pub fn dns_name(&mut self, ip: &IpAddr, now: Instant) -> Option<String> {
        self.dns.name_of(ip, now)
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
                std::fs::read_to_string("/etc/resolv.conf")
                    .ok()
                    .and_then(|t| reverse::nameserver(&t))
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

    /// The address → name map, for tests and tools that feed answers by hand.
    pub fn dns_mut(&mut self) -> &mut DnsNames {
        &mut self.dns
    }

    /// Things to tell the reader (a reverse-DNS worker that could not start).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// How full the map is and how many packets it refused, for `--debug`.
    pub fn tables(&self) -> String {
        format!(
            "DNS names {} (rejected packets {})",
            self.dns.len(),
            self.dns.rejected
        )
    }
}
