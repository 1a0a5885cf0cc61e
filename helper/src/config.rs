//! The filter configuration: its TOML schema, its defaults and its errors.
//!
//! `conf/conntrack-tray.toml` is the documented default and is embedded in the binary; the
//! defaults in code below must say the same, which a unit test checks. The same schema travels
//! as JSON in the `config` stdin command, so the applet and the helper share one definition.
//!
//! Errors point the user at the fix: the file, the line, the dotted key, what was expected.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::flow::{Direction, Proto};

/// The documented default configuration, as shipped in `conf/`.
pub const DEFAULT_TOML: &str = include_str!("../../conf/conntrack-tray.toml");

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub monitor: Monitor,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub whitelist: Whitelist,
    #[serde(default)]
    pub critical: Critical,
    #[serde(default)]
    pub names: Names,
}

/// Where the `host` of a connection may come from besides the DNS answers the machine saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Names {
    /// Ask for the PTR name of addresses no DNS answer named.
    pub reverse_dns: bool,
    /// Wait at most this long for it before reporting without a name.
    pub reverse_timeout_ms: u64,
    /// The resolver to ask; the first nameserver of /etc/resolv.conf when left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolver: Option<IpAddr>,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            reverse_dns: false,
            reverse_timeout_ms: 200,
            resolver: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Monitor {
    pub protocols: Vec<ProtoSel>,
    pub directions: Vec<Direction>,
    pub ensure_conntrack: bool,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor {
            protocols: vec![ProtoSel::One(Proto::Tcp)],
            directions: vec![Direction::Outbound, Direction::Inbound],
            ensure_conntrack: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    pub show_unknown: bool,
    pub critical_only: bool,
    pub ignore_loopback: bool,
    pub repeat_after_secs: u64,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            show_unknown: true,
            critical_only: false,
            ignore_loopback: true,
            repeat_after_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Whitelist {
    /// Absolute paths match a verified exe at that path; bare names the file name of a
    /// verified system exe (see `filter::process_matches`). Empty by default: no program is
    /// trusted until the person says so.
    pub processes: Vec<String>,
    pub remote: Vec<RemoteNet>,
    /// Names as looked up over DNS: `github.com` exactly, `*.mozilla.org` any name below it.
    /// Only a name the connecting process got from one of the system's resolvers matches.
    pub hosts: Vec<HostPattern>,
    /// A program (as in `processes`) allowed to reach a host (as in `hosts`), and no other.
    pub program_hosts: Vec<ProgramHost>,
    /// A program (as in `processes`) when the process that forked it runs the file at
    /// `parent`, as the kernel's fork record proves (see `filter::started_by`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub started_by: Vec<StartedBy>,
    /// The SHA-256 each whitelisted program had when it was whitelisted: an entry above
    /// silences the program at that path only while it runs a binary of one of its pinned
    /// hashes. A program with no pin is matched as before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<Pin>,
}

/// One `{ program = "/usr/bin/curl", sha256 = "…" }` entry of `whitelist.pinned`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub program: AbsolutePath,
    pub sha256: Sha256Hex,
}

/// An absolute path, as a pin's `program`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AbsolutePath(pub String);

impl<'de> Deserialize<'de> for AbsolutePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.starts_with('/') {
            Ok(AbsolutePath(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "`{s}` is not an absolute path (a pin names the program's file, e.g. /usr/bin/curl)"
            )))
        }
    }
}

/// A SHA-256 in hex, kept lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sha256Hex(pub String);

impl FromStr for Sha256Hex {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha256Hex(t.to_ascii_lowercase()))
        } else {
            Err(format!("`{s}` is not a SHA-256 (64 hexadecimal digits)"))
        }
    }
}

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One `{ program = "/usr/bin/git", host = "github.com" }` entry of `whitelist.program_hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramHost {
    pub program: String,
    pub host: HostPattern,
}

/// One `{ program = "/usr/lib/git-core/git-remote-https", parent = "/usr/bin/git" }` entry of
/// `whitelist.started_by`. The parent is a path: a bare name would match any root-owned
/// file of that name, and a rule about who started a program is only as narrow as its parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartedBy {
    pub program: String,
    pub parent: AbsolutePath,
}

/// A whitelisted name: exact, or `*.` and a domain for every name below that domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(String);

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            Some(domain) => {
                host.len() > domain.len()
                    && host.ends_with(domain)
                    && host[..host.len() - domain.len()].ends_with('.')
            }
            None => host == self.0,
        }
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let p = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let name = p.strip_prefix("*.").unwrap_or(&p);
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if ok {
            Ok(HostPattern(p))
        } else {
            Err(format!(
                "`{s}` is not a host name or `*.domain` pattern (e.g. github.com, *.mozilla.org)"
            ))
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Critical {
    pub ports: Vec<u16>,
}

impl Default for Critical {
    fn default() -> Self {
        Critical {
            ports: vec![80, 443],
        }
    }
}

/// One entry of `monitor.protocols`: a protocol, or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoSel {
    All,
    One(Proto),
}

impl fmt::Display for ProtoSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoSel::All => f.write_str("all"),
            ProtoSel::One(p) => p.fmt(f),
        }
    }
}

impl Serialize for ProtoSel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProtoSel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "all" {
            return Ok(ProtoSel::All);
        }
        s.parse()
            .map(ProtoSel::One)
            .map_err(serde::de::Error::custom)
    }
}

/// A whitelisted remote: a CIDR, or a single address written without a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteNet(pub IpNet);

impl RemoteNet {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for RemoteNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(RemoteNet(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| RemoteNet(IpNet::from(ip.to_canonical())))
            .map_err(|_| {
                format!("`{s}` is not an IP address or CIDR (e.g. 192.168.0.0/16, 2001:db8::/32)")
            })
    }
}

impl fmt::Display for RemoteNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            self.0.addr().fmt(f)
        } else {
            self.0.fmt(f)
        }
    }
}

impl Serialize for RemoteNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RemoteNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// Whether flows of this protocol are watched at all.
    pub fn watches_proto(&self, p: Proto) -> bool {
        self.monitor
            .protocols
            .iter()
            .any(|sel| matches!(sel, ProtoSel::All) || *sel == ProtoSel::One(p))
    }

    /// Parses a TOML document; `origin` names it in errors (a path, or `"<embedded default>"`).
    pub fn from_toml(src: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(src).map_err(|e| ConfigError::from_toml(src, origin, &e))
    }

    /// Reads and parses a file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: origin.clone(),
            source,
        })?;
        Config::from_toml(&src, &origin)
    }

    /// The embedded default. Its parse is checked by a unit test, so this cannot fail in a
    /// released binary; the fallback keeps that promise without a panic path.
    pub fn embedded_default() -> Config {
        Config::from_toml(DEFAULT_TOML, "<embedded default>").unwrap_or_default()
    }

    /// The effective configuration as TOML, for `--show-defaults`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        /// The dotted key the error is about, when it can be told (`filter.repeat_after_secs`).
        key: Option<String>,
        message: String,
    },
}

impl ConfigError {
    /// The error for a TOML parse or schema error `e` in `src`, with line, column and key.
    pub fn from_toml(src: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
        let offset = e.span().map(|s| s.start).unwrap_or(0).min(src.len());
        let (line, column) = line_col(src, offset);
        ConfigError::Invalid {
            path: origin.to_string(),
            line,
            column,
            key: key_at(src, offset),
            message: e.message().trim().to_string(),
        }
    }

    /// The same error without any text taken from the file: for a file the calling user may
    /// not be allowed to read (the helper runs as root on the user's behalf).
    pub fn redacted(&self) -> String {
        match self {
            ConfigError::Io { path, source } => {
                format!("{path}: cannot read the configuration: {source}")
            }
            ConfigError::Invalid {
                path, line, column, ..
            } => format!("{path}:{line}:{column}: not a valid conntrack-tray configuration"),
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The dotted key whose key or value covers `offset`: the nearest `key =` at or above the
/// offset's line, prefixed by the table header above it.
fn key_at(src: &str, offset: usize) -> Option<String> {
    // Include the rest of the offset's own line, so an error on a key itself finds that key.
    let line_end = src
        .get(offset..)?
        .find('\n')
        .map(|i| offset + i)
        .unwrap_or(src.len());
    let upto = &src[..line_end];
    let mut key: Option<String> = None;
    for raw in upto.lines().rev() {
        let line = raw.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            let table = line
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            return Some(match key {
                Some(k) if !table.is_empty() => format!("{table}.{k}"),
                Some(k) => k,
                None => table.to_string(),
            });
        }
        if key.is_none() {
            if let Some((k, _)) = line.split_once('=') {
                let k = k.trim().trim_matches('"');
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                {
                    key = Some(k.to_string());
                }
            }
        }
    }
    key
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
