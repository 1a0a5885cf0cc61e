//! Issue 12, executable identity: the person is told when a program they whitelisted or have
//! seen before runs another binary at the same path, and "Whitelist" pins the hash it runs.

use super::*;

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

/// A connection of `exe` running a binary of hash `sha`.
fn hashed(exe: &str, remote: &str, sha: &str) -> serde_json::Value {
    let mut v = connection_value(exe, remote, 443, false);
    v["process"]["exe_sha256"] = sha.into();
    v
}

#[test]
fn a_whitelisted_or_known_program_running_another_binary_is_notified() {
    let test = "a_whitelisted_or_known_program_running_another_binary_is_notified";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let config = format!(
        "[whitelist]\nprocesses = [\"/usr/bin/curl\"]\npinned = [{{ program = \"/usr/bin/curl\", sha256 = \"{A}\" }}]\n"
    );
    let w = world_with_config(Some(&config));
    // The helper reports the whitelisted curl because its binary is not the pinned one.
    let mut changed = hashed("/usr/bin/curl", "9.9.9.9", B);
    changed["process"]["exe_changed"] =
        serde_json::json!({"path": "/usr/bin/curl", "was": A, "now": B, "since": "whitelisted"});
    w.applet.emit(&changed.to_string());
    let n = wait_until(WAIT, || {
        w.notes.seen.all().into_iter().find(|n| {
            n.body
                .contains("/usr/bin/curl changed since it was whitelisted")
        })
    })
    .unwrap_or_else(|| panic!("no change notice: {:?}", w.notes.seen.all()));
    // Whitelisting it again pins the binary it runs now, in place of the old pin.
    let pinned = wait_until(WAIT, || {
        w.notes.invoke(n.id, "whitelist-program");
        std::thread::sleep(Duration::from_millis(200));
        let text = w.config_text();
        (text.contains(B) && !text.contains(A)).then_some(text)
    });
    assert!(pinned.is_some(), "not re-pinned: {}", w.config_text());

    // A program first seen with one binary, then with another, to a destination it knows.
    w.applet
        .emit(&hashed("/usr/bin/wget", "9.9.9.10", A).to_string());
    w.applet
        .emit(&hashed("/usr/bin/wget", "9.9.9.10", C).to_string());
    let seen = wait_until(WAIT, || {
        w.notes.seen.all().into_iter().find(|n| {
            n.body
                .contains("/usr/bin/wget changed since it was first seen")
        })
    });
    assert!(seen.is_some(), "no change notice: {:?}", w.notes.seen.all());
}
