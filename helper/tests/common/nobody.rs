//! Playing the watched program: scripts run as `nobody` (through `setpriv`) in a test's
//! network namespace.

use std::process::Command;

/// Runs a shell script as `nobody` inside namespace `ns`; fails the test if it fails.
pub fn as_nobody(ns: &str, script: &str) {
    as_nobody_output(ns, script);
}

/// A python one-liner that connects to `ip:port` (named `comm` first, if given) and closes.
pub fn connect_py(ip: &str, port: u16, comm: Option<&str>) -> String {
    let rename = comm
        .map(|c| format!("ctypes.CDLL(None).prctl(15, b'{c}', 0, 0, 0); "))
        .unwrap_or_default();
    format!(
        "import ctypes, socket; {rename}s = socket.create_connection(('{ip}', {port}), 2); s.close()"
    )
}

/// Runs a shell script as `nobody` inside namespace `ns` and returns what it printed; fails
/// the test if it fails.
pub fn as_nobody_output(ns: &str, script: &str) -> String {
    as_nobody_under(&[], ns, script)
}

/// The same, run under `wrapper` (a command and its arguments, ending in `--`, run as root
/// before the privileges are dropped: `prlimit` to raise a limit past the hard one).
pub fn as_nobody_under(wrapper: &[&str], ns: &str, script: &str) -> String {
    let mut argv = wrapper.to_vec();
    argv.extend(["ip", "netns", "exec", ns, "setpriv"]);
    argv.extend(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
    argv.extend(["sh", "-euc", script]);
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "the attacker's script failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}
