//! Optional reverse DNS (PTR) for remote addresses whose name was not seen in a DNS answer.
//!
//! Off by default: it sends a query for every new remote address to the resolver, and a PTR
//! name is chosen by whoever owns the address (so it never counts for `whitelist.hosts`).
//! The lookups run on a worker thread; the pipeline waits for an answer at most the configured
//! timeout, only when no other flow is waiting, and keeps answers (and failures) in a bounded
//! cache.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use lru::LruCache;
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, QCLASS, QTYPE, TYPE};

/// How long an answer, or the lack of one, is kept.
const KEEP: Duration = Duration::from_secs(3600);
const CACHE: usize = 4096;
/// How long the worker waits for the resolver before giving up on one address.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The name under `in-addr.arpa` or `ip6.arpa` that a PTR query asks for.
pub fn reverse_name(ip: &IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// Asks `server` for the PTR name of `ip`; `None` on any failure.
pub fn query_ptr(server: SocketAddr, ip: &IpAddr, timeout: Duration) -> Option<String> {
    let id = (std::process::id() as u16) ^ (Instant::now().elapsed().subsec_nanos() as u16);
    let mut q = Packet::new_query(id);
    q.set_flags(PacketFlag::RECURSION_DESIRED);
    let name = reverse_name(ip);
    q.questions.push(Question::new(
        Name::new(&name).ok()?,
        QTYPE::TYPE(TYPE::PTR),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    let bytes = q.build_bytes_vec().ok()?;
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(bind).ok()?;
    sock.set_read_timeout(Some(timeout)).ok()?;
    sock.connect(server).ok()?;
    sock.send(&bytes).ok()?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    let reply = Packet::parse(buf.get(..n)?).ok()?;
    if reply.id() != id {
        return None;
    }
    reply.answers.iter().find_map(|rr| match &rr.rdata {
        RData::PTR(p) => {
            let n = p.0.to_string().trim_end_matches('.').to_ascii_lowercase();
            (!n.is_empty()).then(|| n.chars().take(crate::names::dns::NAME_LIMIT).collect())
        }
        _ => None,
    })
}

/// The pipeline's side of the reverse lookups.
pub struct Reverse {
    requests: Sender<IpAddr>,
    answers: Receiver<(IpAddr, Option<String>)>,
    cache: LruCache<IpAddr, (Option<String>, Instant)>,
    pending: std::collections::HashSet<IpAddr>,
    timeout: Duration,
}

impl Reverse {
    /// Starts the worker that asks `server`.
    pub fn start(server: SocketAddr, timeout: Duration) -> std::io::Result<Reverse> {
        let (requests, rx) = unbounded::<IpAddr>();
        let (tx, answers) = unbounded();
        std::thread::Builder::new()
            .name("reverse-dns".into())
            .spawn(move || {
                for ip in rx {
                    if tx
                        .send((ip, query_ptr(server, &ip, QUERY_TIMEOUT)))
                        .is_err()
                    {
                        return;
                    }
                }
            })?;
        Ok(Reverse::with_channels(requests, answers, timeout))
    }

    /// Over channels served by anything (the tests answer by hand).
    pub fn with_channels(
        requests: Sender<IpAddr>,
        answers: Receiver<(IpAddr, Option<String>)>,
        timeout: Duration,
    ) -> Reverse {
        Reverse {
            requests,
            answers,
            cache: LruCache::new(NonZeroUsize::new(CACHE).unwrap_or(NonZeroUsize::MIN)),
            pending: Default::default(),
            timeout,
        }
    }

    fn take_answers(&mut self, now: Instant) {
        for (ip, name) in self.answers.try_iter() {
            self.pending.remove(&ip);
            self.cache.put(ip, (name, now + KEEP));
        }
    }

    /// The PTR name of `ip`: from the cache, or asked for and waited on for at most the
    /// timeout when `may_wait` (nothing else is queued), else `None` for now.
    pub fn name_of(&mut self, ip: &IpAddr, may_wait: bool, now: Instant) -> Option<String> {
        self.take_answers(now);
        if let Some((name, until)) = self.cache.get(ip) {
            if *until > now {
                return name.clone();
            }
        }
        if self.pending.insert(*ip) && self.requests.send(*ip).is_err() {
            self.pending.remove(ip);
            return None;
        }
        if !may_wait {
            return None;
        }
        let deadline = Instant::now() + self.timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.answers.recv_timeout(left) {
                Ok((answered, name)) => {
                    self.pending.remove(&answered);
                    self.cache.put(answered, (name.clone(), now + KEEP));
                    if answered == *ip {
                        return name;
                    }
                }
                Err(_) => break,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_of_both_families() {
        assert_eq!(
            reverse_name(&"93.184.216.34".parse().expect("ip")),
            "34.216.184.93.in-addr.arpa"
        );
        assert_eq!(
            reverse_name(&"2001:db8::567:89ab".parse().expect("ip")),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
        assert_eq!(
            reverse_name(&"::ffff:10.0.0.1".parse().expect("ip")),
            "1.0.0.10.in-addr.arpa"
        );
    }

    #[test]
    fn waits_at_most_the_timeout_and_caches_what_comes_later() {
        let (req_tx, req_rx) = unbounded();
        let (ans_tx, ans_rx) = unbounded();
        let mut r = Reverse::with_channels(req_tx, ans_rx, Duration::from_millis(50));
        let ip: IpAddr = "10.0.0.9".parse().expect("ip");
        let t0 = Instant::now();
        assert_eq!(r.name_of(&ip, true, t0), None, "nobody answered");
        assert!(t0.elapsed() < Duration::from_millis(500));
        assert_eq!(req_rx.try_recv().ok(), Some(ip));
        // Asked once while pending.
        assert_eq!(r.name_of(&ip, false, t0), None);
        assert!(req_rx.try_recv().is_err());
        ans_tx
            .send((ip, Some("host.example".into())))
            .expect("answer");
        assert_eq!(
            r.name_of(&ip, false, Instant::now()).as_deref(),
            Some("host.example")
        );
        // A worker that answers in time is waited for.
        let other: IpAddr = "10.0.0.10".parse().expect("ip");
        std::thread::spawn(move || {
            if let Ok(ip) = req_rx.recv() {
                let _ = ans_tx.send((ip, Some("quick.example".into())));
            }
        });
        assert_eq!(
            r.name_of(&other, true, Instant::now()).as_deref(),
            Some("quick.example")
        );
    }
}
