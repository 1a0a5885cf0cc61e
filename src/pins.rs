//! Binary identity in the applet: the hash a program had when the person whitelisted it
//! (`whitelist.pinned`, written beside the whitelist entry), and the notice that a known
//! program now runs another binary.
//!
//! Pinning is what makes "Whitelist" mean *this* binary: the helper silences a pinned program
//! only while its file has that SHA-256, and reports it with `exe_changed` otherwise (after
//! an update too: the person whitelists the new binary, which replaces the pin). A program
//! whose event came without a hash (not hashed yet, too large) is whitelisted unpinned, as
//! before pins existed.

use conntrack_tray_helper::event::{ChangedSince, ExeChanged, Process};
use conntrack_tray_helper::Connection;
use toml_edit::{Array, InlineTable, Item, Table, Value};

/// Puts `{ program, sha256 }` into `t.pinned`, replacing the program's older pins (the
/// person whitelisted this binary now; the one before is no longer what they chose).
pub fn pin(t: &mut Table, program: &str, sha256: &str, path: &str) -> Result<(), String> {
    let item = t
        .entry("pinned")
        .or_insert_with(|| Item::Value(Value::Array(Array::new())));
    let arr = item.as_array_mut().ok_or_else(|| path.to_string())?;
    arr.retain(|v| {
        v.as_inline_table()
            .and_then(|e| e.get("program"))
            .and_then(|p| p.as_str())
            != Some(program)
    });
    let mut entry = InlineTable::new();
    entry.insert("program", program.into());
    entry.insert("sha256", sha256.into());
    arr.push(Value::InlineTable(entry));
    Ok(())
}

/// The pin to write when the person whitelists `c`'s program: its path and hash, when the
/// event had both.
pub fn pin_of(c: &Connection) -> Option<(String, String)> {
    let p = c.process.as_ref()?;
    Some((p.exe.clone()?, p.exe_sha256.clone()?))
}

/// Marks `c` as a changed binary since the program was first seen (`was`, from what was
/// learned), unless the helper already said it changed since it was whitelisted.
pub fn mark_first_seen_change(c: &mut Connection, was: String) {
    let Some(p) = c.process.as_mut() else { return };
    let Some(path) = p.exe.clone() else { return };
    if p.exe_changed.is_none() {
        p.exe_changed = Some(Box::new(ExeChanged {
            path,
            was,
            now: p.exe_sha256.clone(),
            since: ChangedSince::FirstSeen,
        }));
    }
}

/// What the notification says of a changed binary (plain text; `text` cuts the path).
pub fn change_line(c: &ExeChanged, path: &str) -> String {
    let since = match c.since {
        ChangedSince::Whitelisted => "it was whitelisted",
        ChangedSince::FirstSeen => "it was first seen",
    };
    format!("{path} changed since {since}")
}

/// The details' lines on who runs: the binary's hash (and its change), and where it runs,
/// with what the process could have chosen itself marked as its claim.
pub fn identity_lines(p: &Process) -> Vec<String> {
    use crate::text::line;
    let mut out = Vec::new();
    match (&p.exe_sha256, &p.exe_sha256_missing) {
        (Some(h), _) => out.push(format!("sha256: {}", line(h))),
        (None, Some(why)) => out.push(format!("sha256: none ({})", line(why))),
        (None, None) => {}
    }
    if let Some(ch) = &p.exe_changed {
        out.push(change_line(ch, &line(&ch.path)));
    }
    let Some(ctx) = &p.context else { return out };
    let claim = if ctx.claimed { " (its own claim)" } else { "" };
    if let Some(cg) = &ctx.cgroup {
        out.push(format!("cgroup: {}{claim}", line(cg)));
    }
    if let Some(u) = &ctx.unit {
        let kind = if ctx.user_unit { "user unit" } else { "unit" };
        out.push(format!("{kind}: {}{claim}", line(u)));
    }
    if let Some(f) = &ctx.flatpak {
        out.push(format!("flatpak: {}{claim}", line(f)));
    }
    if let Some(s) = &ctx.snap {
        out.push(format!("snap: {}{claim}", line(s)));
    }
    if let Some(c) = &ctx.container {
        let name = c
            .name
            .as_deref()
            .map(|n| {
                let named = if c.name_claimed {
                    ", its own claim"
                } else {
                    ""
                };
                format!(" \"{}\"{named}", line(n))
            })
            .unwrap_or_default();
        out.push(format!(
            "container: {} {}{name}{claim}",
            line(&c.engine),
            line(&c.id)
        ));
    }
    if let Some(ns) = ctx.netns {
        let whose = if ctx.netns_own {
            "this host's"
        } else {
            "its own"
        };
        out.push(format!("network namespace: {ns} ({whose})"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use toml_edit::DocumentMut;

    #[test]
    fn a_pin_replaces_the_programs_older_one_and_keeps_the_rest() {
        let mut doc: DocumentMut = "[whitelist]\n# mine\nprocesses = [\"/usr/bin/curl\"]\n"
            .parse()
            .expect("toml");
        let t = doc["whitelist"].as_table_mut().expect("table");
        pin(t, "/usr/bin/curl", &"a".repeat(64), "whitelist.pinned").expect("pin");
        pin(t, "/usr/bin/git", &"b".repeat(64), "whitelist.pinned").expect("pin");
        pin(t, "/usr/bin/curl", &"c".repeat(64), "whitelist.pinned").expect("pin");
        let text = doc.to_string();
        assert!(text.starts_with("[whitelist]\n# mine\n"), "{text}");
        let cfg = conntrack_tray_helper::Config::from_toml(&text, "x").expect("parses");
        let pins: Vec<(&str, &str)> = cfg
            .whitelist
            .pinned
            .iter()
            .map(|p| (p.program.0.as_str(), &p.sha256.0[..1]))
            .collect();
        assert_eq!(pins, vec![("/usr/bin/git", "b"), ("/usr/bin/curl", "c")]);
        let mut bad: DocumentMut = "[whitelist]\npinned = 3\n".parse().expect("toml");
        let t = bad["whitelist"].as_table_mut().expect("table");
        assert!(pin(t, "/x", "y", "whitelist.pinned").is_err());
    }

    #[test]
    fn the_details_name_the_hash_and_mark_claims_and_escape_names() {
        use conntrack_tray_helper::event::{Container, Context};
        let p = Process {
            exe_sha256: Some("ab".repeat(32)),
            context: Some(std::sync::Arc::new(Context {
                cgroup: Some("/user.slice/user-1000.slice/user@1000.service/x.scope".into()),
                claimed: true,
                unit: Some("evil\u{202e}.scope".into()),
                user_unit: true,
                container: Some(Container {
                    engine: "podman".into(),
                    id: "1".repeat(64),
                    name: Some("web\nforged line".into()),
                    name_claimed: true,
                }),
                netns: Some(4026531840),
                netns_own: true,
                ..Default::default()
            })),
            ..Default::default()
        };
        let lines = identity_lines(&p);
        assert_eq!(lines[0], format!("sha256: {}", "ab".repeat(32)));
        assert!(
            lines
                .iter()
                .all(|l| !l.contains('\n') && !l.contains('\u{202e}')),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("user unit: evil") && lines[2].ends_with("(its own claim)"),
            "{lines:?}"
        );
        assert!(
            lines[3].contains("its own claim") && lines[3].starts_with("container: podman 111"),
            "{lines:?}"
        );
        assert_eq!(lines[4], "network namespace: 4026531840 (this host's)");
    }

    #[test]
    fn the_change_line_says_since_when() {
        let c = ExeChanged {
            path: "/usr/bin/curl".into(),
            was: "a".into(),
            now: None,
            since: ChangedSince::Whitelisted,
        };
        assert_eq!(
            change_line(&c, "/usr/bin/curl"),
            "/usr/bin/curl changed since it was whitelisted"
        );
    }
}
