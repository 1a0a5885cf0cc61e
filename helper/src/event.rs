//! The event model and the wire protocol: the one source of truth for what the helper says.
//!
//! The helper writes one [`Event`] per line as JSON on stdout; the applet reads the same types
//! back. Everything here is plain data with serde derives, so the protocol is what these types
//! serialize to, and a field added here is added on both sides at once.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::Config;

/// The transport protocol of a flow, as conntrack knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    UdpLite,
    Sctp,
    Dccp,
    Icmp,
    Icmpv6,
    Gre,
    /// Any other IP protocol number; named `ipproto-N` on the wire.
    Other(u8),
}

impl Proto {
    /// Maps an IP protocol number (as in `/etc/protocols`) to a protocol.
    pub fn from_number(n: u8) -> Proto {
        match n {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            136 => Proto::UdpLite,
            132 => Proto::Sctp,
            33 => Proto::Dccp,
            1 => Proto::Icmp,
            58 => Proto::Icmpv6,
            47 => Proto::Gre,
            other => Proto::Other(other),
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::UdpLite => 136,
            Proto::Sctp => 132,
            Proto::Dccp => 33,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
            Proto::Gre => 47,
            Proto::Other(n) => n,
        }
    }

    /// Whether the flow is identified by ports (as opposed to ICMP type/code or nothing).
    pub fn has_ports(self) -> bool {
        matches!(
            self,
            Proto::Tcp | Proto::Udp | Proto::UdpLite | Proto::Sctp | Proto::Dccp
        )
    }

    pub fn is_icmp(self) -> bool {
        matches!(self, Proto::Icmp | Proto::Icmpv6)
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proto::Tcp => f.write_str("tcp"),
            Proto::Udp => f.write_str("udp"),
            Proto::UdpLite => f.write_str("udplite"),
            Proto::Sctp => f.write_str("sctp"),
            Proto::Dccp => f.write_str("dccp"),
            Proto::Icmp => f.write_str("icmp"),
            Proto::Icmpv6 => f.write_str("icmpv6"),
            Proto::Gre => f.write_str("gre"),
            Proto::Other(n) => write!(f, "ipproto-{n}"),
        }
    }
}

/// The error of parsing a protocol name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol `{0}` (expected tcp, udp, udplite, sctp, dccp, icmp, icmpv6, gre or ipproto-N)")]
pub struct UnknownProto(pub String);

impl FromStr for Proto {
    type Err = UnknownProto;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "udplite" | "udp-lite" => Proto::UdpLite,
            "sctp" => Proto::Sctp,
            "dccp" => Proto::Dccp,
            "icmp" => Proto::Icmp,
            "icmpv6" | "ipv6-icmp" => Proto::Icmpv6,
            "gre" => Proto::Gre,
            other => match other.strip_prefix("ipproto-").map(str::parse::<u8>) {
                Some(Ok(n)) => Proto::from_number(n),
                _ => return Err(UnknownProto(other.to_string())),
            },
        })
    }
}

impl Serialize for Proto {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Proto {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

/// Which end of a flow is this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The original source is a local address: a program here connected out.
    Outbound,
    /// The original destination is local: someone connected to us.
    Inbound,
    /// Neither end is local: routed through this machine.
    Forward,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
            Direction::Forward => "forward",
        })
    }
}

/// One direction of a conntrack entry: what the kernel calls a tuple.
///
/// For ICMP the ports are zero and `icmp` carries type, code and id instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub proto: Proto,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub icmp: Option<Icmp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Icmp {
    #[serde(rename = "type")]
    pub kind: u8,
    pub code: u8,
    pub id: u16,
}

/// What kind of conntrack event a message was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEvent {
    New,
    Destroy,
}

/// A conntrack entry as announced by the kernel, before any interpretation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub event: FlowEvent,
    pub id: Option<u32>,
    pub zone: Option<u16>,
    pub mark: Option<u32>,
    pub orig: Tuple,
    pub reply: Option<Tuple>,
}

/// The process that owns a flow's socket.
///
/// Every string here is chosen by whoever started the process and is untrusted: it may hold
/// newlines, escapes, markup or bytes that are not UTF-8 (those are replaced with U+FFFD when
/// read). Writers escape them; see `output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    /// The executable's path; `None` when the kernel would not tell (kernel threads, races).
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    pub uid: u32,
    /// The user name for `uid`, when the passwd database has one.
    pub user: Option<String>,
}

impl Process {
    /// The executable's file name, or `comm` when the path is unknown.
    pub fn program_name(&self) -> &str {
        self.exe
            .as_deref()
            .and_then(|e| e.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.comm)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostSource {
    Dns,
    Ptr,
}

/// How a flow was tied to its process; tells the reader how much to trust the match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributedBy {
    /// The kernel recorded the process as it called `connect()` (outbound TCP).
    Connect,
    /// The socket with exactly the flow's addresses and ports.
    Socket,
    /// An unconnected UDP socket bound to the flow's local address and port.
    BoundSocket,
    /// The listening socket that will accept this inbound connection.
    Listener,
    /// A TCP socket already closed by the kernel (connection refused at once) that the
    /// program still held, with the flow's local address and port.
    ClosedSocket,
}

/// A flow that passed the filter, as reported on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    /// RFC 3339 time, UTC, microseconds, when the helper read the event.
    pub ts: String,
    pub proto: Proto,
    pub family: Family,
    pub direction: Direction,
    pub local_ip: IpAddr,
    /// `None` for protocols without ports (ICMP, GRE, ...).
    pub local_port: Option<u16>,
    pub remote_ip: IpAddr,
    pub remote_port: Option<u16>,
    /// The name the machine looked up before connecting to `remote_ip` (from the DNS answers
    /// it received), when one was seen: untrusted, like every name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Where `host` came from: `dns` (an answer this machine received) or `ptr` (a reverse
    /// lookup, named by whoever owns the address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_source: Option<HostSource>,
    /// ICMP type, code and id, for ICMP and ICMPv6 flows only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<Icmp>,
    pub critical: bool,
    /// The conntrack id, zone and mark, to match this line with `conntrack -L`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ct_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<u32>,
    /// `None` when no process could be found: the helper never guesses.
    pub process: Option<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributed_by: Option<AttributedBy>,
}

/// One line of the helper's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// Always the first line: who is speaking and with which settings.
    Hello {
        version: String,
        hostname: String,
        pid: u32,
        config: Box<Config>,
    },
    Connection(Box<Connection>),
    /// Events the kernel or the helper had to drop; `count` is how many since the last report.
    Lost {
        count: u64,
        /// Where they were dropped: `kernel` (socket buffer overrun) or `queue` (helper backlog).
        reason: String,
    },
    /// Something went wrong that the reader should know about; the helper goes on.
    Error {
        message: String,
    },
    /// Acknowledges a stdin command that changed state (config, pause, resume).
    Ack {
        cmd: String,
    },
}

/// Flows for the unit tests of every module, so each builds them the same way.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{Flow, FlowEvent, Proto, Tuple};

    /// A NEW flow with no reply tuple (classification derives the socket's view).
    pub fn flow(proto: Proto, src: &str, sport: u16, dst: &str, dport: u16) -> Flow {
        Flow {
            event: FlowEvent::New,
            id: None,
            zone: None,
            mark: None,
            orig: Tuple {
                proto,
                src: src.parse().expect("test address"),
                dst: dst.parse().expect("test address"),
                sport,
                dport,
                icmp: None,
            },
            reply: None,
        }
    }
}
