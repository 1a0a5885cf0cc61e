//! A real host to watch over ssh: Debian's sshd in namespace `b` of a [`Net`], with host keys
//! of its own, a test user made for it (removed after), a client key, a known_hosts file and
//! an ssh config for the client, and the real helper where a sudoers drop-in lets the user
//! run it.
//!
//! ssh reads `~/.ssh` from the passwd entry's home, not from `$HOME`, so the applet's test
//! HOME cannot carry the client's config: the `ssh` on the applet's PATH ([`Remote::path`]) is
//! a script that writes one line per run (to count them) and runs `/usr/bin/ssh -F CONFIG`.
//!
//! Outside the test's namespaces and temporary directory only this is touched: the user
//! account and its drop-in `/etc/sudoers.d/ctt-PID-N` (validated with `visudo -cf`), both
//! removed on drop, and sshd's privilege separation directory `/run/sshd`, made as the
//! package's service makes it when it is missing. Leftovers of a test run that was killed
//! (its pid gone) are removed at the next start.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::common::wait_until;
use crate::nets::{self, Net};

/// sshd's port in namespace `b` (private to the test, so any port will do).
pub const PORT: u16 = 22022;
/// The ssh config's name for the host with the good key, and for it with a wrong one.
pub const HOST: &str = "ctt-remote";
pub const WRONG_KEY_HOST: &str = "ctt-wrongkey";

const SUDOERS_D: &str = "/etc/sudoers.d";

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Remote {
    pub net: Net,
    pub dir: tempfile::TempDir,
    /// The test user on the host.
    pub user: String,
    /// The real helper, copied to a place of the test's (no sudoers line until [`Remote::allow`]).
    pub helper: String,
    sudoers: PathBuf,
    sshd: Option<Child>,
}

fn run(c: &mut Command) -> String {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `ctt-PID-N` with PID a process that is gone: a leftover of a killed run.
fn stale(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("ctt-") else {
        return false;
    };
    let Some((pid, n)) = rest.split_once('-') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(pid) && digits(n) && !Path::new("/proc").join(pid).exists()
}

/// Removes the users and sudoers drop-ins of test runs that were killed before their drop.
fn remove_stale() {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for user in passwd.lines().filter_map(|l| l.split(':').next()) {
        if stale(user) {
            let _ = Command::new("userdel").arg(user).status();
        }
    }
    for e in std::fs::read_dir(SUDOERS_D).into_iter().flatten().flatten() {
        if stale(&e.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The pids of the processes in network namespace `ns`.
pub fn ns_pids(ns: &str) -> Vec<i32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A process's arguments.
pub fn argv(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl Remote {
    /// The namespaces, the user, the keys and sshd, listening on namespace `b`'s address.
    pub fn start() -> Remote {
        remove_stale();
        let net = Net::new();
        let dir = tempfile::tempdir().expect("tmp");
        // sshd reads authorized_keys as the user, and sudo looks at the helper as the user:
        // the way to them is open (the keys that matter are the client's, 0600).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let d = dir.path().to_path_buf();
        let user = format!(
            "ctt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let sudoers = Path::new(SUDOERS_D).join(&user);
        let home = d.join("home");
        std::fs::create_dir(&home).expect("home");
        let mut remote = Remote {
            net,
            helper: d.join("bin/conntrack-tray-helper").display().to_string(),
            dir,
            user,
            sudoers,
            sshd: None,
        };
        // Made once the guard that removes it is there. "*": no password logs in, and the
        // account is not locked (sshd without PAM refuses a locked one, "!", even with a key).
        run(Command::new("useradd")
            .args(["--no-create-home", "--user-group", "--shell", "/bin/sh"])
            .args(["-p", "*", "--home-dir"])
            .arg(&home)
            .arg(&remote.user));
        run(Command::new("chown").arg(&remote.user).arg(&home));
        for key in ["host_key", "client_key", "wrong_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(d.join(key)));
        }
        let pub_key =
            |k: &str| std::fs::read_to_string(d.join(format!("{k}.pub"))).expect("public key");
        write(&d.join("authorized_keys"), &pub_key("client_key"), 0o644);
        std::fs::create_dir(d.join("bin")).expect("bin");
        std::fs::copy(nets::helper_bin(), &remote.helper).expect("copy the helper");
        remote.sshd = Some(remote.start_sshd());
        let b4 = remote.net.b4();
        let host_key = pub_key("host_key");
        let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        write(
            &d.join("known_hosts"),
            &format!("[{b4}]:{PORT} {}\n", host_key.join(" ")),
            0o644,
        );
        let config = format!(
            "Host {HOST} {b4}\n  HostName {b4}\n  IdentityFile {d}/client_key\n\
             Host {WRONG_KEY_HOST}\n  HostName {b4}\n  IdentityFile {d}/wrong_key\n\
             Host *\n  Port {PORT}\n  IdentitiesOnly yes\n  IdentityAgent none\n\
             \x20 UserKnownHostsFile {d}/known_hosts\n  GlobalKnownHostsFile /dev/null\n\
             \x20 StrictHostKeyChecking yes\n  UpdateHostKeys no\n  ControlMaster no\n\
             \x20 ControlPath none\n",
            d = d.display()
        );
        write(&d.join("ssh_config"), &config, 0o644);
        remote
    }

    fn start_sshd(&self) -> Child {
        let d = self.dir.path();
        let config = format!(
            "ListenAddress {b4}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nUsePAM no\n\
             StrictModes no\nAuthorizedKeysFile {d}/authorized_keys\nAllowUsers {user}\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin no\nUseDNS no\nPrintMotd no\n\
             PrintLastLog no\nLogLevel VERBOSE\n",
            b4 = self.net.b4(),
            d = d.display(),
            user = self.user
        );
        write(&d.join("sshd_config"), &config, 0o644);
        // As the package's service does (RuntimeDirectory=sshd): sshd needs it, empty.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let log = d.join("sshd.log");
        let port = PORT.to_string();
        let (cfg, logs) = (d.join("sshd_config"), log.display().to_string());
        let cfg = cfg.display().to_string();
        let sshd = Net::cmd(
            &self.net.b,
            &["/usr/sbin/sshd", "-D", "-f", &cfg, "-p", &port, "-E", &logs],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("sshd");
        let up = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("Server listening on")
                .then_some(())
        });
        assert!(
            up.is_some(),
            "sshd (pid {}) did not listen: {}",
            sshd.id(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        sshd
    }

    /// The sudoers line that lets the user run `helper` exactly as the applet does.
    pub fn line_for(&self, helper: &str) -> String {
        format!("{} ALL=(root) NOPASSWD: {helper} --format json", self.user)
    }

    /// Adds `line` to the user's sudoers drop-in, once `visudo -cf` has accepted the whole.
    pub fn allow(&self, line: &str) {
        let mut text = std::fs::read_to_string(&self.sudoers).unwrap_or_default();
        text.push_str(line);
        text.push('\n');
        let check = self.dir.path().join("sudoers.check");
        write(&check, &text, 0o440);
        run(Command::new("visudo").arg("-cf").arg(&check));
        // Written beside it and renamed: sudo never reads half a file (nor one with a dot).
        let tmp = Path::new(SUDOERS_D).join(format!(".{}", self.user));
        write(&tmp, &text, 0o440);
        std::fs::rename(&tmp, &self.sudoers).expect("sudoers drop-in");
    }

    /// The user at the host, as the ssh config names it.
    pub fn target(&self) -> String {
        format!("{}@{HOST}", self.user)
    }

    /// A PATH whose `ssh` is the real one with the test's config, logging each run (`$$`,
    /// which stays ssh's pid: the script execs it) to the file returned.
    pub fn path(&self, name: &str) -> (String, PathBuf) {
        let bin = self.dir.path().join(format!("ssh-{name}"));
        std::fs::create_dir_all(&bin).expect("ssh dir");
        let log = bin.join("runs");
        let script = format!(
            "#!/bin/sh\necho \"$$ $*\" >> '{}'\nexec /usr/bin/ssh -F '{}' \"$@\"\n",
            log.display(),
            self.dir.path().join("ssh_config").display()
        );
        write(&bin.join("ssh"), &script, 0o755);
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        (path, log)
    }

    /// The helpers running on the host from `path` (argv[0]; sudo and its shell have it
    /// later in their arguments).
    pub fn helpers(&self, path: &str) -> Vec<i32> {
        ns_pids(&self.net.b)
            .into_iter()
            .filter(|p| argv(*p).first().map(String::as_str) == Some(path))
            .collect()
    }

    /// Drops every packet to and from sshd's port in namespace `b`: the link is cut without
    /// either end closing it, as when a laptop vanishes.
    pub fn cut_link(&self) {
        let rules = format!(
            "table inet ctt_cut {{\n  chain in {{ type filter hook input priority -10; tcp dport {PORT} drop; }}\n  chain out {{ type filter hook output priority -10; tcp sport {PORT} drop; }}\n}}\n"
        );
        let file = self.dir.path().join("cut.nft");
        write(&file, &rules, 0o644);
        run(&mut Net::cmd(
            &self.net.b,
            &["nft", "-f", &file.display().to_string()],
        ));
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Every process in the namespaces, sshd's sessions and the helpers among them, by pid.
        for _ in 0..50 {
            let pids: Vec<i32> = [&self.net.a, &self.net.b]
                .iter()
                .flat_map(|ns| ns_pids(ns))
                .collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            // sshd is ours to reap; the others are their parents'.
            if let Some(c) = &mut self.sshd {
                let _ = c.try_wait();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.sudoers);
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        if !passwd
            .lines()
            .any(|l| l.split(':').next() == Some(self.user.as_str()))
        {
            return;
        }
        match Command::new("userdel").arg(&self.user).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "userdel {}: {}",
                self.user,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("userdel {}: {e}", self.user),
        }
    }
}
