//! Why a helper link failed, from what ssh, sudo and the helper wrote on stderr and how the
//! link ended, with the fix in one line. Pure: the lines come in, a [`Refusal`] goes out.
//!
//! A permanent refusal (a key that does not log in, an unknown host key, sudo asking for a
//! password, no helper, a helper too old) is not retried until the person chooses *Start
//! monitoring…* in the menu: retrying it every minute would only fill the remote's auth log.
//! Anything else (the host unreachable, the connection lost) is retried with back-off.

/// How a link failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AuthFailed,
    HostKeyUnknown,
    HostKeyChanged,
    SudoPassword,
    HelperMissing,
    HelperTooOld,
    /// Could not reach the host, or the connection was lost: retried.
    Unreachable,
}

impl Refusal {
    /// Not retried until the person asks.
    pub fn permanent(self) -> bool {
        !matches!(self, Refusal::Unreachable)
    }

    /// What happened, for a person.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::AuthFailed => "ssh authentication failed",
            Refusal::HostKeyUnknown => "the host key is unknown",
            Refusal::HostKeyChanged => "the host key has changed",
            Refusal::SudoPassword => "sudo wants a password",
            Refusal::HelperMissing => "the helper was not found",
            Refusal::HelperTooOld => "the helper is too old",
            Refusal::Unreachable => "ssh connection lost",
        }
    }

    /// The fix, in one line, for `target` (as the person configured it).
    pub fn fix(self, target: &str) -> String {
        match self {
            Refusal::AuthFailed => format!(
                "the login must work with a key and no prompt: `ssh -o BatchMode=yes {target} true` must succeed (ssh-copy-id {target}, or load the key into ssh-agent)"
            ),
            Refusal::HostKeyUnknown => format!(
                "log in once with `ssh {target}` and check the fingerprint, so the key is in known_hosts"
            ),
            Refusal::HostKeyChanged => format!(
                "the host's key is not the one in known_hosts: if that is expected, remove the old one with `ssh-keygen -R` and log in once with `ssh {target}`"
            ),
            Refusal::SudoPassword => format!(
                "add the sudoers line that `conntrack-tray remote setup {target}` prints on the remote host"
            ),
            Refusal::HelperMissing => format!(
                "install conntrack-tray on the remote host (`conntrack-tray remote setup {target}` checks where it is)"
            ),
            Refusal::HelperTooOld => "update conntrack-tray on the remote host".into(),
            Refusal::Unreachable => "retrying with back-off".into(),
        }
    }
}

/// Classifies a failed ssh link from its stderr lines (the last ones) and exit code. `None`
/// when nothing says why (a helper that exited on its own, say).
pub fn classify(stderr: &[String], code: Option<i32>) -> Option<Refusal> {
    let has = |needle: &str| stderr.iter().any(|l| l.contains(needle));
    if has("REMOTE HOST IDENTIFICATION HAS CHANGED") || has("Host key for") && has("has changed") {
        return Some(Refusal::HostKeyChanged);
    }
    if has("Host key verification failed") || has("No ED25519 host key is known") {
        return Some(Refusal::HostKeyUnknown);
    }
    if has("Permission denied (") || has("Too many authentication failures") {
        return Some(Refusal::AuthFailed);
    }
    if has("sudo: a password is required")
        || has("sudo: a terminal is required")
        || has("is not allowed to execute")
        || has("is not in the sudoers file")
        || has("may not run sudo")
    {
        return Some(Refusal::SudoPassword);
    }
    if has("command not found") || has("No such file or directory") {
        return Some(Refusal::HelperMissing);
    }
    if has("unexpected argument") || has("unrecognized subcommand") || has("invalid value") {
        return Some(Refusal::HelperTooOld);
    }
    if code == Some(255)
        || has("Connection refused")
        || has("Connection timed out")
        || has("No route to host")
        || has("Could not resolve hostname")
        || has("Connection closed by")
        || has("Broken pipe")
    {
        return Some(Refusal::Unreachable);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(String::from).collect()
    }

    #[test]
    fn the_failures_people_meet_are_named_with_their_fix() {
        let cases = [
            (
                "alice@nas: Permission denied (publickey,password).",
                Some(255),
                Refusal::AuthFailed,
            ),
            ("Host key verification failed.", Some(255), Refusal::HostKeyUnknown),
            (
                "@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.",
                Some(255),
                Refusal::HostKeyChanged,
            ),
            ("sudo: a password is required", Some(1), Refusal::SudoPassword),
            (
                "Sorry, user alice is not allowed to execute '/usr/libexec/conntrack-tray/conntrack-tray-helper --format json' as root on nas.",
                Some(1),
                Refusal::SudoPassword,
            ),
            (
                "sudo: /usr/libexec/conntrack-tray/conntrack-tray-helper: command not found",
                Some(1),
                Refusal::HelperMissing,
            ),
            (
                "error: unexpected argument '--heartbeat' found",
                Some(2),
                Refusal::HelperTooOld,
            ),
            (
                "ssh: connect to host nas port 22: Connection refused",
                Some(255),
                Refusal::Unreachable,
            ),
            ("", Some(255), Refusal::Unreachable),
        ];
        for (err, code, want) in cases {
            assert_eq!(classify(&lines(err), code), Some(want), "{err}");
        }
        assert_eq!(classify(&[], Some(0)), None);
        assert!(Refusal::SudoPassword.permanent() && !Refusal::Unreachable.permanent());
        assert!(Refusal::AuthFailed
            .fix("alice@nas")
            .contains("BatchMode=yes alice@nas"));
    }
}
