//! "Program X when started by Y" (`whitelist.started_by`) in the applet: the entry a
//! connection offers, and its edit of the settings document.
//!
//! An entry is only offered where the helper would match it: the event says the kernel saw
//! that very parent fork the process (`parent_forked`), and the parent's path is verified. A
//! button that wrote a rule the helper then never applies would leave the person believing
//! the program is silenced for a reason it is not. Nor is one offered for a parent that runs
//! whatever it is given (a shell, an interpreter, `env`): that rule would trust everything
//! such a parent is ever asked to start, the watched code's requests included.

use conntrack_tray_helper::event::Process;
use toml_edit::{Array, InlineTable, Item, Table, Value};

/// Parents that run whatever they are given (shells, interpreters, `env`): "started by"
/// one of them says nothing about who asked, so no entry is offered for them.
const RUNS_ANYTHING: &[&str] = &[
    "sh", "bash", "dash", "zsh", "fish", "ksh", "busybox", "env", "node", "nodejs", "perl", "ruby",
    "php", "lua", "java", "sudo", "doas", "pkexec", "xargs", "nohup", "timeout",
];

fn runs_anything(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    RUNS_ANYTHING.contains(&base) || base.starts_with("python")
}

/// The entry a process offers: its exe and its parent's, with the button's label.
pub fn offer(p: &Process) -> Option<(String, String, String)> {
    let a = p
        .ancestors
        .first()
        .filter(|a| p.parent_forked && a.exe_verified && p.exe_verified)?;
    let parent = a
        .exe
        .clone()
        .filter(|e| e.starts_with('/') && !runs_anything(e))?;
    let program = p.exe.clone().filter(|e| e.starts_with('/'))?;
    let name = |path: &str| crate::text::line(path.rsplit('/').next().unwrap_or(path));
    let label = format!(
        "Whitelist {} when started by {}",
        name(&program),
        name(&parent)
    );
    Some((program, parent, label))
}

/// Puts `{ program, parent }` into `t.started_by`, once; `path` names the key in an error.
pub fn push(t: &mut Table, program: &str, parent: &str, path: &str) -> Result<(), String> {
    let item = t
        .entry("started_by")
        .or_insert_with(|| Item::Value(Value::Array(Array::new())));
    let arr = item.as_array_mut().ok_or_else(|| path.to_string())?;
    let same = |v: &Value, k: &str, want: &str| {
        v.as_inline_table()
            .and_then(|e| e.get(k))
            .and_then(|p| p.as_str())
            == Some(want)
    };
    if !arr
        .iter()
        .any(|v| same(v, "program", program) && same(v, "parent", parent))
    {
        let mut entry = InlineTable::new();
        entry.insert("program", program.into());
        entry.insert("parent", parent.into());
        arr.push(Value::InlineTable(entry));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{apply_to_document, Edit, UserConfig};
    use conntrack_tray_helper::event::Ancestor;
    use toml_edit::DocumentMut;

    fn child(forked: bool, verified: bool) -> Process {
        Process {
            exe: Some("/usr/bin/node".into()),
            exe_verified: true,
            ancestors: std::sync::Arc::new(vec![Ancestor {
                pid: 9,
                comm: "npm".into(),
                exe: Some("/usr/lib/node/npm\u{202e}x".into()),
                exe_verified: verified,
                ..Default::default()
            }]),
            parent_forked: forked,
            ..Default::default()
        }
    }

    #[test]
    fn only_a_proven_parent_is_offered_and_its_label_is_sanitized() {
        let (program, parent, label) = offer(&child(true, true)).expect("offered");
        assert_eq!(program, "/usr/bin/node");
        assert_eq!(parent, "/usr/lib/node/npm\u{202e}x");
        assert!(
            label.starts_with("Whitelist node when started by npm"),
            "{label}"
        );
        assert!(!label.contains('\u{202e}'), "{label}");
        assert!(offer(&child(false, true)).is_none());
        assert!(offer(&child(true, false)).is_none());
        let mut no_exe = child(true, true);
        no_exe.exe = None;
        assert!(offer(&no_exe).is_none());
        let mut unverified = child(true, true);
        unverified.exe_verified = false;
        assert!(offer(&unverified).is_none());
        // A shell or an interpreter runs what it is given: no entry.
        for shell in [
            "/usr/bin/dash",
            "/usr/bin/python3.11",
            "/usr/bin/env",
            "/usr/bin/node",
        ] {
            let mut p = child(true, true);
            let mut a = p.ancestors[0].clone();
            a.exe = Some(shell.into());
            p.ancestors = std::sync::Arc::new(vec![a]);
            assert!(offer(&p).is_none(), "{shell}");
        }
    }

    #[test]
    fn the_edit_writes_one_entry_that_reads_back_here_and_on_a_host() {
        let mut doc: DocumentMut = "# mine\n[whitelist]\nprocesses = []\n"
            .parse()
            .expect("toml");
        let edit = |host: Option<&str>| Edit::WhitelistStartedBy {
            host: host.map(str::to_string),
            program: "/usr/bin/node".into(),
            parent: "/usr/bin/npm".into(),
        };
        for e in [edit(None), edit(None), edit(Some("nas"))] {
            apply_to_document(&mut doc, &e).expect("edit");
        }
        let text = doc.to_string();
        assert!(text.starts_with("# mine\n[whitelist]\n"), "{text}");
        let c = UserConfig::parse(&text, "t").expect("parses");
        assert_eq!(c.whitelist.started_by.len(), 1, "{text}");
        assert_eq!(c.whitelist.started_by[0].parent.0, "/usr/bin/npm");
        let on = c.whitelist_on("nas");
        assert_eq!(on.started_by.len(), 2, "{text}");
        // A key of another shape is named, and nothing is written.
        let mut bad: DocumentMut = "[whitelist]\nstarted_by = 3\n".parse().expect("toml");
        assert_eq!(
            apply_to_document(&mut bad, &edit(None)),
            Err("whitelist.started_by".to_string())
        );
    }
}
