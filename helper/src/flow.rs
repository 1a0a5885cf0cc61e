//! The kernel's view of a flow, before any interpretation: protocols, tuples and conntrack
//! entries as the parser makes them.
//!
//! These types carry no process and no name; [`crate::direction`] decides which end is local,
//! and [`crate::event`] is what is finally reported. `Proto`, `Family`, `Direction` and `Icmp`
//! also appear on the wire, so they serialize; `Tuple` and `Flow` never leave the helper.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

impl Tuple {
    /// The same flow seen from its other end: addresses and ports swapped.
    pub fn reversed(self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..self
        }
    }
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
    /// A TCP flow's state as conntrack holds it (`CTA_PROTOINFO_TCP_STATE`): in a NEW event,
    /// `SYN_SENT` when conntrack saw the connection's SYN, `ESTABLISHED` when it picked up a
    /// connection already under way (one that began before conntrack tracked anything).
    pub tcp_state: Option<u8>,
    /// The helper saw a NEW event of this TCP tuple from its SYN before (the reader marks
    /// it): a pickup under way is then that connection again, after its conntrack entry
    /// ended (it expired, or was dropped), not one from before the helper.
    pub seen_from_syn: bool,
    /// The helper saw this tuple's reverse connect from its SYN: conntrack picked the
    /// connection up again at a packet of the other end (a server's keepalive, say), so
    /// `orig` is the peer's side of a connection this machine opened.
    pub reply_seen_from_syn: bool,
    /// The connection's socket was there when the helper started
    /// ([`TcpBefore`](crate::pickups::TcpBefore)): a pickup of it may have begun before
    /// anything was tracked, and so have no connect record.
    pub began_before: bool,
}

/// conntrack's `TCP_CONNTRACK_SYN_SENT`.
pub const CT_TCP_SYN_SENT: u8 = 1;

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
            tcp_state: None,
            seen_from_syn: false,
            reply_seen_from_syn: false,
            began_before: false,
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
