//! What a person reads: the notification for a connection (summary, body, buttons), the
//! menu's label for it, its details (shown and copied), and the pieces the status line and
//! the notices are made of. All of it is built here, with the one sanitizer,
//! `conntrack_tray_helper::sanitize`.
//!
//! Every string a watched program, a packet or a file chose (process name, exe path, command
//! line, user, a looked-up DNS name, a helper's host name or message, an error quoting the
//! config) passes [`sanitize::display`] exactly once, where it is put into the text, with its
//! limit: program names [`PROGRAM_LIMIT`], host names [`HOST_LIMIT`], anything else
//! [`LINE_LIMIT`]. Control and format characters show as visible escapes (`\u{202e}`), runs of
//! white space as one space. Text built here is for a person as it is: nothing sanitizes it
//! again, and the notification layer only escapes markup for servers that render it (a
//! second, separate step: see `notify`).
//!
//! The layout puts what no watched program chooses first: the summary is
//! `93.184.216.34:443 (example.com) ← curl`, the address and port (numbers from the packet)
//! before any name, so no program name, however long or strange, pushes the destination out
//! of view or stands in for it.

use conntrack_tray_helper::config::HostPattern;
use conntrack_tray_helper::event::{AttributedBy, HostSource};
pub use conntrack_tray_helper::output::endpoint;
use conntrack_tray_helper::sanitize::{self, HOST_LIMIT, LINE_LIMIT, PROGRAM_LIMIT};
use conntrack_tray_helper::{Connection, Direction, Process};

use std::time::Duration;

use crate::alerts::{self, Group, Live};
use crate::history::Seen;
use crate::notify::{
    Caps, Note, ACTION_DETAILS, ACTION_MUTE, ACTION_MUTE_ON_HOST, ACTION_WL_HOST,
    ACTION_WL_PROGRAM, ACTION_WL_PROGRAM_ON_HOST, ACTION_WL_REMOTE, ACTION_WL_REMOTE_ON_HOST,
};
use crate::novelty::Novelty;

/// A program's name for a person.
pub fn program_name(name: &str) -> String {
    sanitize::display(name, PROGRAM_LIMIT)
}

/// A host or DNS name for a person.
pub fn host(name: &str) -> String {
    sanitize::display(name, HOST_LIMIT)
}

/// Any other outside string for a person, in one line (a path, a user, a message).
pub fn line(s: &str) -> String {
    sanitize::display(s, LINE_LIMIT)
}

/// The program a connection belongs to: the exe's file name, or `comm`.
pub fn program(c: &Connection) -> String {
    c.process
        .as_ref()
        .map(|p| program_name(p.program_name()))
        .unwrap_or_else(|| "unknown program".into())
}

/// The remote end: `93.184.216.34:443`, and the looked-up name after it in parentheses.
pub fn destination(c: &Connection) -> String {
    let at = endpoint(&c.remote_ip, c.remote_port);
    // A name only the address owner (PTR) or the program itself (its own DNS server) vouches
    // for says so, so it is never read as the system resolver's word.
    let mark = match c.host_source {
        Some(HostSource::Ptr) => "PTR ",
        Some(HostSource::OwnResolver) => "its own DNS: ",
        Some(HostSource::Dns) | None => "",
    };
    match &c.host {
        Some(name) => format!("{at} ({mark}{})", host(name)),
        None => at,
    }
}

/// One line for a connection, the remote end first: `9.9.9.9:443 ← curl` for a program
/// here that connected out, `203.0.113.5:50000 → sshd` for one that was connected to (the
/// arrow points from who connected to whom), `↔` for a flow routed through.
pub fn headline(c: &Connection) -> String {
    let arrow = match c.direction {
        Direction::Outbound => "←",
        Direction::Inbound => "→",
        Direction::Forward => "↔",
    };
    format!("{} {arrow} {}", destination(c), program(c))
}

/// The menu's label for a connection seen on `machine`.
pub fn recent_label(s: &Seen) -> String {
    let own = if s.own {
        " (this applet's ssh link)"
    } else {
        ""
    };
    format!("{}, on {}{own}", headline(&s.conn), host(&s.host))
}

/// Who started the process, compactly, the process first: `curl ← sh ← node npm install ←
/// bash`. Each parent is its program's name and up to two of its arguments (file names
/// only, options left out), so an interpreter says what it ran. `None` without parents.
pub fn lineage(p: &Process) -> Option<String> {
    if p.ancestors.is_empty() {
        return None;
    }
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    let mut parts = vec![p.program_name().to_string()];
    for a in p.ancestors.iter() {
        let name = a.exe.as_deref().map(base).unwrap_or_else(|| a.comm.clone());
        let args = a
            .cmdline
            .iter()
            .skip(1)
            .filter(|x| !x.starts_with('-') && !x.is_empty())
            .take(2)
            .map(|x| base(x).chars().take(24).collect::<String>());
        let mut step = vec![name];
        step.extend(args);
        parts.push(step.join(" "));
    }
    Some(line(&parts.join(" ← ")))
}

/// The path a "Whitelist" of `c`'s program writes: only a verified executable's. The
/// helper matches an entry only to a verified executable, so for any other the button would
/// silence nothing, and would pin the hash of whatever binary claimed the path (the watched
/// code's, in a mount namespace of its own) in place of the real program's pin.
pub fn whitelistable_exe(c: &Connection) -> Option<&str> {
    let p = c.process.as_ref().filter(|p| p.exe_verified)?;
    p.exe.as_deref()
}

/// The name a "Whitelist" button shows for the connection's exe (whose path it adds), when
/// there is one to whitelist ([`whitelistable_exe`]).
pub fn exe_name(c: &Connection) -> Option<String> {
    let exe = whitelistable_exe(c)?;
    Some(program_name(exe.rsplit('/').next().unwrap_or(exe)))
}

/// The notification for one reported connection seen on `machine`. Plain text: `notify`
/// escapes the body for a server that renders markup.
pub fn connection_note(c: &Connection, machine: &str, caps: &Caps) -> Note {
    let mut body = Vec::new();
    match &c.process {
        Some(p) => {
            if let Some(ch) = &p.exe_changed {
                body.push(crate::pins::change_line(ch, &line(&ch.path)));
            }
            if let Some(exe) = &p.exe {
                // A path the helper could not verify is what the process claims: say so.
                body.push(match p.exe_verified {
                    true => line(exe),
                    false => format!("{} (not verified)", line(exe)),
                });
            }
            let user = match &p.user {
                Some(u) => line(u),
                None => p.uid.to_string(),
            };
            body.push(format!("pid {}, user {user}", p.pid));
            if let Some(chain) = lineage(p) {
                body.push(chain);
            }
            if c.attributed_by == Some(AttributedBy::Container) {
                body.push("in a container: another network namespace on this machine".into());
            }
        }
        None => body.push("no process could be named".into()),
    }
    body.push(format!(
        "{} {} port {}, on {}",
        c.proto,
        c.direction,
        c.local_port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
        host(machine)
    ));
    if c.critical {
        body.push("critical port".into());
    }
    Note {
        summary: headline(c),
        body: body.join("\n"),
        critical: c.critical,
        icon: if c.critical {
            "dialog-warning"
        } else {
            APP_ICON
        },
        actions: buttons(c, caps),
        expire: alerts::EXPIRE,
    }
}

/// A span of time for a person: `16 s`, `3 min 5 s`, `2 h 4 min` (rounded up to a second, so
/// a wait is never told as 0 s).
pub fn duration(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 if s.is_multiple_of(60) => format!("{} min", s / 60),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// The applet's own icon, for notifications that need no warning.
pub const APP_ICON: &str = "conntrack-tray";

/// At most three buttons (GNOME and others show no more), the most important first: trust
/// the program, silence it for an hour, trust the destination (its name, when the system's
/// resolver gave it, else its address). Clicking the body opens the connections window at
/// this connection, with all its details.
fn buttons(c: &Connection, caps: &Caps) -> Vec<(String, String)> {
    let mut actions = Vec::new();
    if !caps.actions {
        return actions;
    }
    actions.push((ACTION_DETAILS.into(), "Details".into()));
    if let Some(name) = exe_name(c) {
        actions.push((ACTION_WL_PROGRAM.into(), format!("Whitelist {name}")));
    }
    if c.process.is_some() {
        actions.push((ACTION_MUTE.into(), "Mute 1 h".into()));
    }
    // Only a name the system's resolver gave this program can be whitelisted.
    let whitelistable = c.host_source.is_some_and(HostSource::may_whitelist);
    match c
        .host
        .as_deref()
        .filter(|h| whitelistable && h.parse::<HostPattern>().is_ok())
    {
        Some(name) => actions.push((ACTION_WL_HOST.into(), format!("Whitelist {}", host(name)))),
        None => actions.push((
            ACTION_WL_REMOTE.into(),
            format!("Whitelist {}", c.remote_ip),
        )),
    }
    actions
}

/// The buttons of a connection seen on watched host `on`: the same three, for that host only
/// (a program trusted there is not trusted here).
pub fn buttons_on_host(c: &Connection, on: &str, caps: &Caps) -> Vec<(String, String)> {
    let mut actions = Vec::new();
    if !caps.actions {
        return actions;
    }
    let on = host(on);
    actions.push((ACTION_DETAILS.into(), "Details".into()));
    if let Some(name) = exe_name(c) {
        actions.push((
            ACTION_WL_PROGRAM_ON_HOST.into(),
            format!("Whitelist {name} on {on}"),
        ));
    }
    if c.process.is_some() {
        actions.push((ACTION_MUTE_ON_HOST.into(), format!("Mute 1 h on {on}")));
    }
    actions.push((
        ACTION_WL_REMOTE_ON_HOST.into(),
        format!("Whitelist {} on {on}", c.remote_ip),
    ));
    actions
}

/// A program's notification while it is on screen (see `alerts`): its latest connection
/// `c`, and, once it has several, how many and to how many destinations since it opened
/// (`age` ago). The destination stays first, as in [`headline`].
pub fn program_note(
    live: &Live,
    c: &Connection,
    novelty: Novelty,
    age: Duration,
    machine: &str,
    caps: &Caps,
) -> Note {
    let mut note = connection_note(c, machine, caps);
    if live.connections > 1 {
        let minutes = age.as_secs().div_ceil(60).max(1);
        let span = if minutes == 1 {
            "the last minute".to_string()
        } else {
            format!("the last {minutes} minutes")
        };
        note.summary = format!(
            "{} · {} connections to {} destination{} in {span}",
            note.summary,
            live.connections,
            live.destinations(),
            if live.destinations() == 1 { "" } else { "s" },
        );
    }
    let news = match novelty {
        Novelty::NewProgram => "New program",
        Novelty::NewDestination => "New destination",
        Novelty::Known => "Seen before",
    };
    note.body = format!("{news}\n{}", note.body);
    // Critical urgency only for news on a critical port; known traffic there is a warning.
    note.critical = live.critical;
    if live.critical {
        note.expire = alerts::EXPIRE_CRITICAL;
    }
    note
}

/// The notification programs share past the global limit: it names the first few.
pub fn group_note(g: &Group) -> Note {
    let n = g.programs;
    let mut names: Vec<String> = g
        .names
        .iter()
        .take(alerts::GROUP_NAMED)
        .map(|p| program_name(p))
        .collect();
    if n > alerts::GROUP_NAMED {
        names.push(format!("and {} more", n - alerts::GROUP_NAMED));
    }
    let mut what = if g.all_new {
        format!("new program{}", if n == 1 { "" } else { "s" })
    } else {
        format!("program{} with news", if n == 1 { "" } else { "s" })
    };
    if g.critical {
        what.push_str(" on critical ports");
    }
    Note {
        summary: format!("{n} {what}: {}", names.join(", ")),
        body: format!(
            "{} connection{} in all. Many programs at once share this notification; the tray menu lists each.",
            g.connections,
            if g.connections == 1 { "" } else { "s" }
        ),
        critical: g.critical,
        icon: if g.critical { "dialog-warning" } else { APP_ICON },
        actions: Vec::new(),
        expire: if g.critical {
            alerts::EXPIRE_CRITICAL
        } else {
            alerts::EXPIRE
        },
    }
}

/// Everything known about a connection, one fact a line: the details notification and what
/// "Copy details" puts on the clipboard.
pub fn details(s: &Seen) -> String {
    let c = &s.conn;
    let mut lines = vec![
        format!("time: {}", line(&c.ts)),
        format!("host: {}", host(&s.host)),
        format!(
            "{} {}{}",
            c.proto,
            c.direction,
            if c.critical { " (critical port)" } else { "" }
        ),
        format!("local: {}", endpoint(&c.local_ip, c.local_port)),
        format!("remote: {}", endpoint(&c.remote_ip, c.remote_port)),
    ];
    if let Some(name) = &c.host {
        lines.push(format!("name: {}", host(name)));
    }
    match &c.process {
        Some(p) => {
            lines.push(format!(
                "process: {} (pid {})",
                program_name(&p.comm),
                p.pid
            ));
            let exe = match &p.exe {
                Some(e) if p.exe_verified => format!("{} (verified)", line(e)),
                Some(e) => format!("{} (not verified)", line(e)),
                None => "unknown".into(),
            };
            lines.push(format!("exe: {exe}"));
            lines.push(format!("cmdline: {}", line(&p.cmdline.join(" "))));
            let user = p.user.as_deref().map(line).unwrap_or_else(|| "?".into());
            lines.push(format!("user: {user} (uid {})", p.uid));
            if let Some(cwd) = &p.cwd {
                lines.push(format!("cwd: {}", line(cwd)));
            }
            if p.exited {
                lines.push("exited before it was read: described from its exec record".into());
            }
            for (i, a) in p.ancestors.iter().enumerate() {
                let exe = match &a.exe {
                    Some(e) if a.exe_verified => format!("{} (verified)", line(e)),
                    Some(e) => format!("{} (not verified)", line(e)),
                    None => "exe unknown".into(),
                };
                lines.push(format!(
                    "parent {}: {} (pid {}{}), {exe}: {}",
                    i + 1,
                    program_name(&a.comm),
                    a.pid,
                    if a.exited { ", exited" } else { "" },
                    line(&a.cmdline.join(" "))
                ));
                if i == 0 {
                    lines.push(
                        if p.parent_forked {
                            "forked by parent 1: yes (the kernel saw it fork this process, running that file)"
                        } else {
                            "forked by parent 1: not known (a process can be handed to a reaper, or given its caller's parent)"
                        }
                        .into(),
                    );
                }
            }
            lines.extend(crate::pins::identity_lines(p));
        }
        None => lines.push("process: unknown".into()),
    }
    lines.join("\n")
}

#[cfg(test)]
#[path = "text_tests.rs"]
mod tests;
