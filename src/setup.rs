//! `conntrack-tray remote setup USER@HOST`: checks, one step at a time, what watching a host
//! over ssh needs, and says what to do where it fails:
//!
//! 1. the login works with a key and no prompt (`ssh -o BatchMode=yes`, as the applet runs
//!    it), with the host key known;
//! 2. the helper is installed on the host: at `[remote] helper` when the applet's
//!    configuration sets it (that is the path the applet runs), else at the .deb's place or
//!    `make install`'s;
//! 3. sudo runs it without a password, exactly as the applet will run it; if not, the one
//!    sudoers line that allows that invocation and nothing else: the path and
//!    `--format json`, with no wildcard, so the user cannot run the helper as root with any
//!    other arguments (a `--log-file` of their choosing, say).
//!
//! The commands go through [`Ssh`], so the steps are tested with plain values; the real one
//! is tested against a real sshd in a network namespace.

use std::fmt::Write as _;

use crate::helper_proc::{REMOTE_HELPER, SSH_OPTIONS};
use crate::refusal;

/// The places `remote setup` looks for the helper, first match wins.
pub const REMOTE_HELPERS: [&str; 2] = [
    REMOTE_HELPER,
    "/usr/local/libexec/conntrack-tray/conntrack-tray-helper",
];

/// What a command run on the host gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a shell command on the host, as the applet's ssh would.
pub trait Ssh {
    fn run(&mut self, target: &str, command: &str) -> std::io::Result<Ran>;
}

/// The real ssh, with the applet's options.
pub struct RealSsh;

impl Ssh for RealSsh {
    fn run(&mut self, target: &str, command: &str) -> std::io::Result<Ran> {
        let out = std::process::Command::new("ssh")
            .args(SSH_OPTIONS)
            .args(["--", target, command])
            .stdin(std::process::Stdio::null())
            .output()?;
        Ok(Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// `s` as one word for the remote shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The report for a person, and whether the host is ready to be watched. `configured` is the
/// configuration's `[remote] helper`: the one place looked at when given.
pub fn check(ssh: &mut dyn Ssh, target: &str, configured: Option<&str>) -> (String, bool) {
    let mut out = String::new();
    let fail = |out: &mut String, ran: &Ran| {
        let lines: Vec<String> = ran.stderr.lines().map(String::from).collect();
        match refusal::classify(&lines, ran.code) {
            Some(refusal::Refusal::Unreachable) => {
                let _ = writeln!(out, "  cannot reach {target}: {}", ran.stderr.trim());
            }
            Some(r) => {
                let _ = writeln!(out, "  {}: {}", r.reason(), r.fix(target));
            }
            None => {
                let _ = writeln!(
                    out,
                    "  failed (status {:?}): {}",
                    ran.code,
                    ran.stderr.trim()
                );
            }
        }
    };
    let _ = writeln!(out, "1. ssh login without a prompt (BatchMode=yes)");
    let login = match ssh.run(target, "id -un") {
        Ok(r) => r,
        Err(e) => return (format!("{out}  cannot run ssh: {e}\n"), false),
    };
    if login.code != Some(0) {
        fail(&mut out, &login);
        return (out, false);
    }
    let user = login.stdout.trim().to_string();
    let _ = writeln!(out, "  ok, logged in as {user}");

    let _ = writeln!(out, "2. the helper on the host");
    let places: Vec<&str> = match configured {
        Some(p) => vec![p],
        None => REMOTE_HELPERS.to_vec(),
    };
    let find = format!(
        "for p in {}; do if [ -x \"$p\" ]; then echo \"$p\"; exit 0; fi; done; exit 1",
        places
            .iter()
            .map(|p| quote(p))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let helper = match ssh.run(target, &find) {
        Ok(r) if r.code == Some(0) => r.stdout.trim().to_string(),
        _ => {
            let _ = writeln!(
                out,
                "  not found in {}: install conntrack-tray on the host first",
                places.join(" or ")
            );
            return (out, false);
        }
    };
    let _ = writeln!(out, "  ok, {helper}");

    let _ = writeln!(
        out,
        "3. sudo runs it without a password, as the applet will"
    );
    let invocation = format!("sudo -n {helper} --format json");
    let ran = ssh
        .run(target, &format!("{invocation} </dev/null"))
        .unwrap_or_default();
    let said_hello = ran
        .stdout
        .lines()
        .next()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .is_some_and(|v| v["type"] == "hello");
    let mut ready = true;
    if said_hello {
        let _ = writeln!(out, "  ok");
    } else {
        ready = false;
        let _ = writeln!(
            out,
            "  not yet. On the host, as root, run `visudo -f /etc/sudoers.d/conntrack-tray` and add this one line:\n\n    {user} ALL=(root) NOPASSWD: {helper} --format json\n\n  It allows exactly the applet's invocation and nothing else (sudo refuses any other arguments)."
        );
        if !ran.stderr.trim().is_empty() {
            let _ = writeln!(out, "  (sudo said: {})", ran.stderr.trim());
        }
    }
    let _ = writeln!(
        out,
        "\nIn ~/.config/conntrack-tray/config.toml:\n\n[remote]\nhosts = [\"{target}\"]"
    );
    if helper != REMOTE_HELPER {
        let _ = writeln!(out, "helper = \"{helper}\"");
    }
    (out, ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers by command, in order.
    struct Script(Vec<Ran>, Vec<String>);
    impl Ssh for Script {
        fn run(&mut self, _t: &str, command: &str) -> std::io::Result<Ran> {
            self.1.push(command.to_string());
            Ok(if self.0.is_empty() {
                Ran::default()
            } else {
                self.0.remove(0)
            })
        }
    }

    fn ok(stdout: &str) -> Ran {
        Ran {
            code: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    #[test]
    fn a_host_without_the_sudoers_line_gets_it_pinned_to_the_invocation() {
        let mut s = Script(
            vec![
                ok("alice\n"),
                ok("/usr/local/libexec/conntrack-tray/conntrack-tray-helper\n"),
                Ran {
                    code: Some(1),
                    stdout: String::new(),
                    stderr: "sudo: a password is required\n".into(),
                },
            ],
            Vec::new(),
        );
        let (text, ready) = check(&mut s, "alice@nas", None);
        assert!(!ready);
        assert!(
            text.contains("    alice ALL=(root) NOPASSWD: /usr/local/libexec/conntrack-tray/conntrack-tray-helper --format json\n"),
            "{text}"
        );
        assert!(text.contains("helper = \"/usr/local/libexec/"), "{text}");
        assert_eq!(
            s.1[2],
            "sudo -n /usr/local/libexec/conntrack-tray/conntrack-tray-helper --format json </dev/null"
        );
    }

    #[test]
    fn a_login_that_fails_says_why_and_stops() {
        let mut s = Script(
            vec![Ran {
                code: Some(255),
                stdout: String::new(),
                stderr: "alice@nas: Permission denied (publickey).\n".into(),
            }],
            Vec::new(),
        );
        let (text, ready) = check(&mut s, "alice@nas", None);
        assert!(
            !ready && text.contains("ssh authentication failed"),
            "{text}"
        );
        assert_eq!(s.1.len(), 1);
    }

    #[test]
    fn the_configured_helper_is_the_one_looked_for() {
        let mut s = Script(vec![ok("alice\n"), Ran::default()], Vec::new());
        let (text, ready) = check(&mut s, "alice@nas", Some("/opt/it's/helper"));
        assert!(!ready);
        assert!(
            s.1[1].starts_with("for p in '/opt/it'\\''s/helper'; do"),
            "{}",
            s.1[1]
        );
        assert!(text.contains("not found in /opt/it's/helper:"), "{text}");
    }

    #[test]
    fn a_ready_host_says_so() {
        let mut s = Script(
            vec![
                ok("alice\n"),
                ok(&format!("{REMOTE_HELPER}\n")),
                ok("{\"type\":\"hello\",\"version\":\"0.1.0\"}\n"),
            ],
            Vec::new(),
        );
        let (text, ready) = check(&mut s, "alice@nas", None);
        assert!(ready, "{text}");
        assert!(!text.contains("helper = "), "{text}");
    }
}
