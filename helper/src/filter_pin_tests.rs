//! `whitelist.pinned`: a whitelisted program is silent only while it runs a pinned binary.

use super::*;
use crate::config::{Pin, ProgramHost};
use crate::direction::{classify, LocalAddrs};

const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn curl(hash: Option<&str>) -> Process {
    Process {
        pid: 42,
        comm: "curl".into(),
        exe: Some("/usr/bin/curl".into()),
        exe_verified: true,
        exe_system: true,
        exe_sha256: hash.map(str::to_string),
        ..Default::default()
    }
}

fn cfg(pins: &[&str]) -> Config {
    let mut cfg = Config::default();
    cfg.whitelist.processes = vec!["/usr/bin/curl".into()];
    cfg.whitelist.pinned = pins
        .iter()
        .map(|h| Pin {
            program: crate::config::AbsolutePath("/usr/bin/curl".into()),
            sha256: h.parse().expect("hash"),
        })
        .collect();
    cfg
}

fn sides() -> crate::direction::Sides {
    let flow = crate::flow::fixtures::flow(Proto::Tcp, "10.0.0.1", 40000, "9.9.9.9", 443);
    classify(&flow, &LocalAddrs::new(["10.0.0.1".parse().expect("ip")]))
}

#[test]
fn no_pin_keeps_todays_behaviour() {
    let c = cfg(&[]);
    let p = curl(None);
    assert_eq!(
        process_rule(&c, &sides(), Some(&p), true),
        Err(Skip::ProcessWhitelisted)
    );
    assert!(!needs_hash(&c.whitelist, &p));
    assert_eq!(exe_changed(&c.whitelist, &p), None);
}

#[test]
fn a_pinned_program_is_silent_only_with_its_pinned_binary() {
    let c = cfg(&[OLD]);
    let same = curl(Some(OLD));
    assert!(needs_hash(&c.whitelist, &same));
    assert_eq!(
        process_rule(&c, &sides(), Some(&same), true),
        Err(Skip::ProcessWhitelisted)
    );
    assert_eq!(exe_changed(&c.whitelist, &same), None);
    let changed = curl(Some(NEW));
    assert_eq!(process_rule(&c, &sides(), Some(&changed), true), Ok(()));
    assert_eq!(
        exe_changed(&c.whitelist, &changed),
        Some(ExeChanged {
            path: "/usr/bin/curl".into(),
            was: OLD.into(),
            now: Some(NEW.into()),
            since: ChangedSince::Whitelisted,
        })
    );
    // Not hashed (too large, unreadable): nothing pinned is allowed.
    let unknown = curl(None);
    assert_eq!(process_rule(&c, &sides(), Some(&unknown), true), Ok(()));
    assert_eq!(
        exe_changed(&c.whitelist, &unknown).and_then(|e| e.now),
        None
    );
    // Whitelisted again after an update: either binary is allowed, the newest is `was`.
    let c = cfg(&[OLD, NEW]);
    assert_eq!(
        process_rule(&c, &sides(), Some(&changed), true),
        Err(Skip::ProcessWhitelisted)
    );
    let third = curl(Some(&"3".repeat(64)));
    assert_eq!(
        exe_changed(&c.whitelist, &third).map(|e| e.was),
        Some(NEW.to_string())
    );
}

#[test]
fn an_unverified_process_never_borrows_a_pin() {
    let c = cfg(&[OLD]);
    let forged = Process {
        exe_verified: false,
        ..curl(Some(OLD))
    };
    assert_eq!(process_rule(&c, &sides(), Some(&forged), true), Ok(()));
    // Not named by any entry: no change to tell either.
    assert_eq!(exe_changed(&c.whitelist, &forged), None);
}

#[test]
fn program_host_entries_and_the_applets_check_follow_pins_too() {
    let mut c = cfg(&[OLD]);
    c.whitelist.processes.clear();
    c.whitelist.program_hosts = vec![ProgramHost {
        program: "/usr/bin/curl".into(),
        host: "example.com".parse().expect("host"),
    }];
    let host = Some(("example.com", HostSource::Dns));
    assert_eq!(
        host_rule(&c, Some(&curl(Some(OLD))), host),
        Err(Skip::ProgramHostWhitelisted)
    );
    assert_eq!(host_rule(&c, Some(&curl(Some(NEW))), host), Ok(()));
    assert!(exe_changed(&c.whitelist, &curl(Some(NEW))).is_some());
}

/// `whitelist.started_by`: the program, when its parent is proven to have forked it.
mod started_by_rules {
    use super::*;
    use crate::config::{AbsolutePath, StartedBy};
    use crate::event::Ancestor;

    fn child_of(parent_exe: &str, verified: bool, forked: bool) -> Process {
        Process {
            ancestors: std::sync::Arc::new(vec![Ancestor {
                pid: 7,
                comm: "apt".into(),
                exe: Some(parent_exe.into()),
                exe_verified: verified,
                ..Default::default()
            }]),
            parent_forked: forked,
            ..curl(Some(OLD))
        }
    }

    fn rule(program: &str) -> Config {
        let mut c = Config::default();
        c.whitelist.started_by = vec![StartedBy {
            program: program.into(),
            parent: AbsolutePath("/usr/bin/apt".into()),
        }];
        c
    }

    #[test]
    fn a_proven_parent_silences_the_program_and_nothing_less_does() {
        let c = rule("/usr/bin/curl");
        let silenced = |p: &Process| process_rule(&c, &sides(), Some(p), true).is_err();
        assert!(silenced(&child_of("/usr/bin/apt", true, true)));
        assert!(started_by(
            &c.whitelist,
            &child_of("/usr/bin/apt", true, true)
        ));
        // Its parent, but not proven to have forked it (a reaper, CLONE_PARENT).
        assert!(!silenced(&child_of("/usr/bin/apt", true, false)));
        // A parent whose file is not verified, or another parent.
        assert!(!silenced(&child_of("/usr/bin/apt", false, true)));
        assert!(!silenced(&child_of("/usr/bin/apt-get", true, true)));
        // No parent at all.
        let mut orphan = child_of("/usr/bin/apt", true, true);
        orphan.ancestors = std::sync::Arc::new(Vec::new());
        assert!(!silenced(&orphan));
        // Another program with that parent.
        let mut wget = child_of("/usr/bin/apt", true, true);
        wget.exe = Some("/usr/bin/wget".into());
        assert!(!silenced(&wget));
        // A socket shared with others is no evidence, as for any process entry.
        assert!(process_rule(
            &c,
            &sides(),
            Some(&child_of("/usr/bin/apt", true, true)),
            false
        )
        .is_ok());
    }

    #[test]
    fn the_program_is_matched_as_a_process_entry_and_keeps_its_pins() {
        // A bare name only for a system file.
        let c = rule("curl");
        assert!(started_by(
            &c.whitelist,
            &child_of("/usr/bin/apt", true, true)
        ));
        let mut own = child_of("/usr/bin/apt", true, true);
        own.exe_system = false;
        assert!(!started_by(&c.whitelist, &own));
        // A pin on the program holds for this entry too: another binary is reported, as
        // changed.
        let mut c = rule("/usr/bin/curl");
        c.whitelist.pinned = cfg(&[NEW]).whitelist.pinned;
        let p = child_of("/usr/bin/apt", true, true);
        assert!(process_rule(&c, &sides(), Some(&p), true).is_ok());
        assert!(needs_hash(&c.whitelist, &p));
        assert!(exe_changed(&c.whitelist, &p).is_some());
    }
}
