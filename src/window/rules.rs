//! The whitelist as the Rules view lists it: each entry, where it applies, and what it proves
//! (what the helper checks before it lets a connection through silently, which is what a
//! person needs to judge an entry: `curl` is not the same promise as `/usr/bin/curl`). And the
//! removal of one entry from the configuration document, keeping every comment: it goes
//! through `Settings::apply_with`, the same atomic, comment-keeping write as the menu's edits.

use conntrack_tray_helper::config::{HostPattern, ProgramHost, RemoteNet, StartedBy, Whitelist};
use toml_edit::{DocumentMut, Item};

use crate::settings::UserConfig;

/// One whitelist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Process(String),
    Remote(RemoteNet),
    Host(HostPattern),
    ProgramHost(ProgramHost),
    StartedBy(StartedBy),
}

/// An entry and where it is: `[whitelist]`, or `[remote.on."HOST"]` for one watched host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub on: Option<String>,
    pub entry: Entry,
}

impl Rule {
    /// The entry as a person reads it (sanitized: the file is the person's, but anything that
    /// runs as them can write it).
    pub fn label(&self) -> String {
        let e = match &self.entry {
            Entry::Process(p) => format!("program {}", crate::text::line(p)),
            Entry::Remote(r) => format!("address {r}"),
            Entry::Host(h) => format!("name {}", crate::text::host(&h.to_string())),
            Entry::ProgramHost(ph) => format!(
                "program {} to {}",
                crate::text::line(&ph.program),
                crate::text::host(&ph.host.to_string())
            ),
            Entry::StartedBy(sb) => format!(
                "program {} when started by {}",
                crate::text::line(&sb.program),
                crate::text::line(&sb.parent.0)
            ),
        };
        match &self.on {
            Some(h) => format!("{e}, on {}", crate::text::host(h)),
            None => e,
        }
    }

    /// What a match proves: the evidence the helper requires (`filter::process_matches`,
    /// `filter::whitelisted`).
    pub fn proves(&self) -> &'static str {
        match &self.entry {
            Entry::Process(p) if p.starts_with('/') => {
                "Silences this very file: the running executable is checked to be the file at this path (same device and inode). A copy elsewhere, or a name set by the program, does not match."
            }
            Entry::Process(_) => {
                "Silences a verified system executable of this file name (owned by root, in folders only root can write). Any user can copy a program under this name into their own folders; such a copy does not match."
            }
            Entry::Remote(_) => {
                "Silences every program's connections to this address or range: the address is the packet's, not a name anyone chose."
            }
            Entry::Host(_) => {
                "Silences connections to this name when the program got it from the system's resolver; a name from a reverse lookup (PTR) or from a DNS server of the program's choosing does not match."
            }
            Entry::ProgramHost(_) => {
                "Silences this program (checked as for a program entry) reaching this name (checked as for a name entry), and nothing else."
            }
            Entry::StartedBy(_) => {
                "Silences this program (checked as for a program entry) when the kernel saw a process running this very parent file (same device and inode) fork it. A program handed to this parent after its own parent exited, or given it as parent by another (CLONE_PARENT), does not match. It is not proof of who asked: a program can run this parent itself, with its own arguments, and have it start the program."
            }
        }
    }
}

fn of(on: Option<&str>, w: &Whitelist, out: &mut Vec<Rule>) {
    let rule = |entry| Rule {
        on: on.map(str::to_string),
        entry,
    };
    out.extend(w.processes.iter().cloned().map(Entry::Process).map(rule));
    out.extend(w.remote.iter().copied().map(Entry::Remote).map(rule));
    out.extend(w.hosts.iter().cloned().map(Entry::Host).map(rule));
    out.extend(
        w.program_hosts
            .iter()
            .cloned()
            .map(Entry::ProgramHost)
            .map(rule),
    );
    out.extend(w.started_by.iter().cloned().map(Entry::StartedBy).map(rule));
}

/// Every whitelist entry of the configuration: everywhere first, then each watched host's.
pub fn rules(c: &UserConfig) -> Vec<Rule> {
    let mut out = Vec::new();
    of(None, &c.whitelist, &mut out);
    for (host, w) in &c.remote.on {
        of(Some(host), w, &mut out);
    }
    out
}

/// Removes `rule` from the document (each item that means it: `"9.9.9.9"` and
/// `"9.9.9.9/32"` are one entry). The error names the key whose shape was unexpected.
pub fn remove(doc: &mut DocumentMut, rule: &Rule) -> Result<(), String> {
    let table = match &rule.on {
        None => doc.get_mut("whitelist"),
        Some(h) => doc
            .get_mut("remote")
            .and_then(|r| r.get_mut("on"))
            .and_then(|o| o.get_mut(h)),
    };
    let Some(table) = table else { return Ok(()) };
    let key = match rule.entry {
        Entry::Process(_) => "processes",
        Entry::Remote(_) => "remote",
        Entry::Host(_) => "hosts",
        Entry::ProgramHost(_) => "program_hosts",
        Entry::StartedBy(_) => "started_by",
    };
    let Some(item) = table.get_mut(key) else {
        return Ok(());
    };
    let same_str = |s: Option<&str>| match (&rule.entry, s) {
        (Entry::Process(p), Some(s)) => s == p,
        (Entry::Remote(r), Some(s)) => s.parse::<RemoteNet>().ok().as_ref() == Some(r),
        (Entry::Host(h), Some(s)) => s.parse::<HostPattern>().ok().as_ref() == Some(h),
        _ => false,
    };
    // A pair's second key: `host` or `parent`.
    let same_pair = |program: Option<&str>, get: &dyn Fn(&str) -> Option<String>| match &rule.entry
    {
        Entry::ProgramHost(ph) => {
            program == Some(ph.program.as_str())
                && get("host")
                    .and_then(|h| h.parse::<HostPattern>().ok())
                    .as_ref()
                    == Some(&ph.host)
        }
        Entry::StartedBy(sb) => {
            program == Some(sb.program.as_str()) && get("parent").as_deref() == Some(&sb.parent.0)
        }
        _ => false,
    };
    match item {
        Item::Value(toml_edit::Value::Array(arr)) => {
            arr.retain(|v| match v {
                toml_edit::Value::InlineTable(t) => {
                    !same_pair(t.get("program").and_then(|v| v.as_str()), &|k| {
                        t.get(k).and_then(|v| v.as_str()).map(str::to_string)
                    })
                }
                v => !same_str(v.as_str()),
            });
            // The space that stood after a removed first item's comma.
            if let Some(first) = arr.get_mut(0) {
                let p = first
                    .decor()
                    .prefix()
                    .and_then(|p| p.as_str())
                    .unwrap_or("");
                if !p.is_empty() && p.trim().is_empty() && !p.contains('\n') {
                    first.decor_mut().set_prefix("");
                }
            }
            Ok(())
        }
        Item::ArrayOfTables(tables) => {
            tables.retain(|t| {
                !same_pair(t.get("program").and_then(|v| v.as_str()), &|k| {
                    t.get(k).and_then(|v| v.as_str()).map(str::to_string)
                })
            });
            Ok(())
        }
        _ => Err(key.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# mine
[whitelist]
# trusted programs
processes = ["/usr/bin/curl", "ssh"] # two
remote = ["9.9.9.9", "10.0.0.0/8"]
hosts = ["*.debian.org"]
program_hosts = [{ program = "/usr/bin/git", host = "github.com" }]
started_by = [{ program = "/usr/lib/git-core/git-remote-https", parent = "/usr/bin/git" }]

[[remote.on."nas".program_hosts]]
program = "/usr/bin/rsync"
host = "backup.example"
"#;

    fn parsed(text: &str) -> UserConfig {
        UserConfig::parse(text, "t").expect("parses")
    }

    #[test]
    fn every_entry_is_listed_with_where_it_applies_and_what_it_proves() {
        let r = rules(&parsed(FILE));
        let labels: Vec<String> = r.iter().map(Rule::label).collect();
        assert_eq!(
            labels,
            [
                "program /usr/bin/curl",
                "program ssh",
                "address 9.9.9.9",
                "address 10.0.0.0/8",
                "name *.debian.org",
                "program /usr/bin/git to github.com",
                "program /usr/lib/git-core/git-remote-https when started by /usr/bin/git",
                "program /usr/bin/rsync to backup.example, on nas",
            ]
        );
        assert!(r[0].proves().contains("same device and inode"));
        assert!(r[1].proves().contains("owned by root"));
        assert!(r[4].proves().contains("PTR"));
        assert!(r[6].proves().contains("CLONE_PARENT"));
    }

    #[test]
    fn removing_an_entry_keeps_the_others_and_the_comments() {
        let c = parsed(FILE);
        let r = rules(&c);
        let mut doc: DocumentMut = FILE.parse().expect("toml");
        for i in [0, 3, 5, 6, 7] {
            remove(&mut doc, &r[i]).expect("remove");
        }
        let after = doc.to_string();
        assert!(
            after.starts_with("# mine\n[whitelist]\n# trusted programs\n"),
            "{after}"
        );
        assert!(after.contains("processes = [\"ssh\"] # two"), "{after}");
        let left: Vec<String> = rules(&parsed(&after)).iter().map(Rule::label).collect();
        assert_eq!(
            left,
            ["program ssh", "address 9.9.9.9", "name *.debian.org"]
        );
    }
}
