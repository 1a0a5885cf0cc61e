//! The event model and the wire protocol: the one source of truth for what the helper says.
//!
//! The helper writes one [`Event`] per line as JSON on stdout; the applet reads the same types
//! back. Everything here is plain data with serde derives, so the protocol is what these types
//! serialize to, and a field added here is added on both sides at once.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::Config;
/// The flow vocabulary the wire shares with the kernel side.
pub use crate::flow::{Direction, Family, Icmp, Proto};

/// The process that owns a flow's socket.
///
/// Every string here is chosen by whoever started the process and is untrusted: it may hold
/// newlines, escapes, markup or bytes that are not UTF-8 (those are replaced with U+FFFD when
/// read). Writers escape them; see `output`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    /// The name the process gave itself (`prctl(PR_SET_NAME)` sets it): never evidence.
    pub comm: String,
    /// The executable's path as the process's own mount namespace shows it; `None` when the
    /// kernel would not tell (kernel threads, races, a process that has exited).
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    pub uid: u32,
    /// The user name for `uid`, when the passwd database has one.
    pub user: Option<String>,
    /// `exe`, checked: the file at that path in the helper's mount namespace is the very file
    /// the process runs (same device and inode). Only a verified exe matches a whitelist entry.
    #[serde(default)]
    pub exe_verified: bool,
    /// Why `exe` is not verified, when it is not (another mount namespace, a replaced or
    /// deleted file, a process that had exited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_unverified: Option<String>,
    /// The verified exe is owned by root and sits in no folder anyone else can write: its
    /// user could not have put it there. Only then does a bare program name match it.
    #[serde(default)]
    pub exe_system: bool,
    /// The chain of parents, nearest first, up to the session leader or init (at most
    /// [`ANCESTORS_KEPT`]), as they were when the flow was reported: a parent that has exited
    /// is described from the kernel's exec record. Every string in it is as untrusted as
    /// `cmdline`.
    /// Shared: every cached copy of the process (one per flow in a burst) points at one.
    #[serde(default, skip_serializing_if = "no_ancestors")]
    pub ancestors: std::sync::Arc<Vec<Ancestor>>,
    /// The first of `ancestors` is the process that forked this one, running the very file
    /// its `exe` names: the kernel's fork record says so (`current` at the fork, and the
    /// device and inode of the file it ran), and that file is still at that path. A parent
    /// alone is no proof: a child whose forker exited is handed to a reaper, and
    /// `CLONE_PARENT` gives a child its caller's parent. Only then may a
    /// `whitelist.started_by` rule name the parent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parent_forked: bool,
    /// The working directory (`/proc/PID/cwd`), as the process's mount namespace shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The process had exited before the helper could read it: `exe`, `cmdline` and the
    /// parents come from its exec record (the kernel's, made at its `execve`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exited: bool,
    /// Where the process runs: its cgroup, what that says (systemd unit, Flatpak app, Snap,
    /// container) and its network namespace; parts the process could have chosen itself are
    /// marked as its claim. See `attribution::context`. Shared: every cached copy of the
    /// process (one per flow in a burst) points at one context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<std::sync::Arc<Context>>,
    /// The SHA-256 of the file the process runs (lowercase hex), hashed off the hot path:
    /// absent until known, so a new binary's first flows may go out without it (a flow whose
    /// whitelisting depends on it waits for it). See `attribution::exe_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_sha256: Option<String>,
    /// Why the executable is not and will not be hashed (larger than the limit, unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_sha256_missing: Option<String>,
    /// The whitelisted program at this path ran another binary when it was whitelisted: no
    /// whitelist entry silences it until the person whitelists this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_changed: Option<Box<ExeChanged>>,
    /// Which version of which file runs, as the helper saw it: the hash cache's key. Not on
    /// the wire.
    #[serde(skip)]
    pub exe_file: Option<FileVersion>,
}

/// A file's identity and version: the key its hash is cached under. Device and inode say
/// which file; size, mtime and ctime which contents. A user can set mtime back (`touch -d`)
/// but not ctime, and a deleted file's inode number reused by a new file comes with a new
/// ctime, so a changed binary never borrows the old hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FileVersion {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

/// Against what the binary changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangedSince {
    /// The hash pinned in `whitelist.pinned` when the person whitelisted the program.
    Whitelisted,
    /// The hash the applet noted when it first saw the program (the applet's own notice;
    /// the helper does not know what the person has seen).
    FirstSeen,
}

/// The program at `path` ran a binary with hash `was` and now runs one with hash `now`
/// (`None`: not hashed, see [`Process::exe_sha256_missing`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExeChanged {
    pub path: String,
    pub was: String,
    pub now: Option<String>,
    pub since: ChangedSince,
}

/// Where a process runs, from `/proc/PID/cgroup` and `/proc/PID/ns/net`.
///
/// A process can move itself into any cgroup whose `cgroup.procs` its user can write (its
/// delegated subtree under `user@UID.service`) and name such cgroups as it likes, so a name
/// read from such a cgroup (`claimed`) is only what the process says about itself. Nothing
/// here is used to whitelist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// The cgroup v2 path, from the cgroup root the helper sees; absent when it could not be
    /// read safely (no unified hierarchy, a path outside the helper's cgroup namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The process's own user could have moved it into this cgroup, or named or created it:
    /// `unit`, `flatpak`, `snap` and `container` are its claim. False only when the cgroup,
    /// its `cgroup.procs` and every folder above it are root's and writable by nobody else.
    #[serde(default = "yes")]
    pub claimed: bool,
    /// The innermost systemd unit (`foo.service`, `session-2.scope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// `unit` belongs to a user's service manager (below `user@UID.service`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_unit: bool,
    /// The Flatpak application id (`app-flatpak-<id>-<n>.scope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flatpak: Option<String>,
    /// The Snap's name (`snap.<name>.<app>…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snap: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// The inode of the process's network namespace (`/proc/PID/ns/net`): the kernel's,
    /// never a claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
    /// `netns` is the helper's own network namespace.
    #[serde(default)]
    pub netns_own: bool,
}

fn yes() -> bool {
    true
}

/// A container, named after its cgroup (`docker-<id>.scope`, `libpod-<id>.scope`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// `docker`, `podman`, `containerd`, `crio`, `lxc` or `nspawn`.
    pub engine: String,
    /// The 64-digit id (for `lxc` and `nspawn`, the machine name).
    pub id: String,
    /// The name from the engine's own state file, when one could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The state file `name` came from, or a folder above it, is not root's: the name is a
    /// claim of whoever owns it. (Rootless engines' files, in the user's home, are not read.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub name_claimed: bool,
}

fn no_ancestors(a: &std::sync::Arc<Vec<Ancestor>>) -> bool {
    a.is_empty()
}

/// How many parents a [`Process`] carries at most.
pub const ANCESTORS_KEPT: usize = 8;

/// One parent in a [`Process`]'s chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
    /// Cut short: at most [`ANCESTOR_ARGS_KEPT`] arguments of at most 100 characters.
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// As [`Process::exe_verified`]: only a verified parent may be named in a rule.
    #[serde(default)]
    pub exe_verified: bool,
    /// The parent had exited; what is here comes from its exec record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exited: bool,
}

/// How many of a parent's arguments are kept.
pub const ANCESTOR_ARGS_KEPT: usize = 4;

impl Process {
    /// The same process, its executable not believed, for the reason `why`: no whitelist
    /// entry matches it then.
    pub fn unverified(self, why: &str) -> Process {
        Process {
            exe_verified: false,
            exe_system: false,
            exe_unverified: Some(why.into()),
            ..self
        }
    }

    /// The executable's file name, or `comm` when the path is unknown.
    pub fn program_name(&self) -> &str {
        self.exe
            .as_deref()
            .and_then(|e| e.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.comm)
    }

    /// The identity a person sees and acts on: the executable's path, or `comm` when the path
    /// is unknown. Unlike [`Self::program_name`], two programs of the same file name in
    /// different places stay apart, so muting or counting one never touches the other.
    pub fn identity(&self) -> &str {
        self.exe.as_deref().unwrap_or(&self.comm)
    }
}

/// Where a connection's `host` came from, which says what it proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostSource {
    /// The connecting process itself asked one of the system's resolvers (its resolver
    /// configuration) and this machine received the answer: as good as the resolver.
    Dns,
    /// The connecting process asked a DNS server the system does not use: the program
    /// chose both the question and whoever answered it, so the name proves nothing.
    OwnResolver,
    /// A reverse (PTR) lookup: named by whoever owns the address.
    Ptr,
}

impl HostSource {
    /// Whether a whitelist entry may accept a name from this source.
    pub fn may_whitelist(self) -> bool {
        self == HostSource::Dns
    }
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
    /// The kernel recorded the process as it connected or sent in another network namespace
    /// on this machine (a container behind a bridge); the flow was forwarded from there, and
    /// is reported as this machine's outbound flow.
    Container,
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
    /// The name the connecting process itself looked up before connecting to `remote_ip`
    /// (from the DNS answers this machine received for its queries), when one was seen:
    /// untrusted, like every name. A connection to an address its process did not look up
    /// carries none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Where `host` came from: `dns` (one of the system's resolvers), `own_resolver` (a DNS
    /// server of the program's choosing) or `ptr` (a reverse lookup, named by whoever owns
    /// the address). Only `dns` names can be whitelisted.
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
    #[serde(serialize_with = "process_json")]
    pub process: Option<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributed_by: Option<AttributedBy>,
    /// Other processes that held the flow's socket too (passed with `SCM_RIGHTS`, inherited
    /// across `fork`) when no kernel record said which one used it: `process` is one of the
    /// holders, not proven the sender, and no whitelist entry silences such a flow. At most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_held_by: Vec<Process>,
    /// How many more holders there were beyond those in `also_held_by`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub also_held_by_more: u32,
    /// Not every process could be looked at for other holders within the lookup's budget
    /// (thousands of processes or fds changing at once): others may hold the socket unseen,
    /// so the flow is not whitelisted either.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub holders_incomplete: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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

/// Writes a connection's process as JSON, reusing what was written for the last one on this
/// thread when it is the same process, field for field: in a burst every line names the same
/// program, and writing its command line, ancestors and context again for each was a fifth
/// of the helper's CPU. The text is the one serde writes for it (compact), so a line is the
/// same either way; a connection is only ever written as JSON.
fn process_json<S: serde::Serializer>(p: &Option<Process>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::Error;
    use serde_json::value::RawValue;
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<Option<(Process, Box<RawValue>)>> = const { RefCell::new(None) };
    }
    let Some(p) = p else {
        return s.serialize_none();
    };
    LAST.with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return s.serialize_some(p);
        };
        if let Some((seen, json)) = last.as_ref() {
            if seen == p {
                return s.serialize_some(json);
            }
        }
        let json = serde_json::value::to_raw_value(p).map_err(S::Error::custom)?;
        let done = s.serialize_some(&json);
        *last = Some((p.clone(), json));
        done
    })
}
