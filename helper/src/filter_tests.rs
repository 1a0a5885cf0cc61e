use super::*;
use crate::config::{ProtoSel, RemoteNet};
use crate::direction::{classify, LocalAddrs};

fn sides(proto: Proto, src: &str, sport: u16, dst: &str, dport: u16) -> Sides {
    let flow = crate::flow::fixtures::flow(proto, src, sport, dst, dport);
    classify(&flow, &LocalAddrs::new(["10.0.0.1".parse().expect("ip")]))
}

fn out(dport: u16) -> Sides {
    sides(Proto::Tcp, "10.0.0.1", 40000, "93.184.216.34", dport)
}

fn proc_(comm: &str, exe: &str) -> Process {
    Process {
        pid: 42,
        comm: comm.into(),
        exe: Some(exe.into()),
        cmdline: vec![comm.into()],
        uid: 1000,
        user: Some("alice".into()),
        exe_verified: true,
        exe_system: true,
        ..Default::default()
    }
}

/// The rules after attribution, in the pipeline's order (no name).
fn after_attribution(
    cfg: &Config,
    s: &Sides,
    p: Option<&Process>,
    alone: bool,
    repeats: &mut RepeatFilter,
    now: Instant,
) -> Result<(), Skip> {
    process_rule(cfg, s, p, alone)?;
    repeat_rule(cfg, s, p, alone, repeats, now)
}

fn run(cfg: &Config, s: &Sides, p: Option<&Process>) -> Result<(), Skip> {
    before_attribution(cfg, s)?;
    after_attribution(cfg, s, p, true, &mut RepeatFilter::new(16), Instant::now())
}

#[test]
fn tcp_only_by_default_and_all_protocols_on_request() {
    let mut cfg = Config::default();
    let udp = sides(Proto::Udp, "10.0.0.1", 4000, "9.9.9.9", 53);
    assert_eq!(before_attribution(&cfg, &udp), Err(Skip::Protocol));
    assert_eq!(before_attribution(&cfg, &out(443)), Ok(()));
    cfg.monitor.protocols = vec![ProtoSel::All];
    assert_eq!(before_attribution(&cfg, &udp), Ok(()));
}

#[test]
fn forward_is_off_by_default_unless_a_local_container_s() {
    let mut cfg = Config::default();
    let fwd = sides(Proto::Tcp, "192.168.1.2", 4000, "9.9.9.9", 443);
    // It may be a container's outbound flow: that is known after attribution.
    assert_eq!(before_attribution(&cfg, &fwd), Ok(()));
    let mut routed = fwd;
    assert_eq!(forward_rule(&cfg, &mut routed, None), Err(Skip::Direction));
    let by = Some(AttributedBy::Socket);
    assert_eq!(forward_rule(&cfg, &mut routed, by), Err(Skip::Direction));
    let mut container = fwd;
    let by = Some(AttributedBy::Container);
    assert_eq!(forward_rule(&cfg, &mut container, by), Ok(()));
    assert_eq!(container.direction, Direction::Outbound);
    cfg.monitor.directions = vec![Direction::Inbound];
    assert_eq!(before_attribution(&cfg, &fwd), Err(Skip::Direction));
    cfg.monitor.directions.push(Direction::Forward);
    assert_eq!(forward_rule(&cfg, &mut { fwd }, None), Ok(()));
    assert_eq!(before_attribution(&cfg, &fwd), Ok(()));
    cfg.monitor.directions = vec![Direction::Forward];
    assert_eq!(before_attribution(&cfg, &out(443)), Err(Skip::Direction));
}

#[test]
fn loopback_is_ignored_unless_asked_for() {
    let mut cfg = Config::default();
    let lo = sides(Proto::Tcp, "127.0.0.1", 4000, "127.0.0.1", 8080);
    assert_eq!(before_attribution(&cfg, &lo), Err(Skip::Loopback));
    cfg.filter.ignore_loopback = false;
    assert_eq!(before_attribution(&cfg, &lo), Ok(()));
}

#[test]
fn whitelisted_cidr_is_silent_in_both_families() {
    let mut cfg = Config::default();
    cfg.whitelist.remote = vec![
        "93.184.0.0/16".parse::<RemoteNet>().expect("net"),
        "2001:db8::/32".parse().expect("net"),
    ];
    assert_eq!(
        before_attribution(&cfg, &out(443)),
        Err(Skip::RemoteWhitelisted)
    );
    let v6 = sides(Proto::Tcp, "::1", 4000, "2001:db8::9", 443);
    // ::1 is loopback only at both ends; this one goes out.
    assert_eq!(before_attribution(&cfg, &v6), Err(Skip::RemoteWhitelisted));
    let other = sides(Proto::Tcp, "10.0.0.1", 4000, "93.185.0.1", 443);
    assert_eq!(before_attribution(&cfg, &other), Ok(()));
}

#[test]
fn inbound_whitelist_applies_to_the_client_address() {
    let mut cfg = Config::default();
    cfg.whitelist.remote = vec!["198.51.100.7".parse().expect("net")];
    let inbound = sides(Proto::Tcp, "198.51.100.7", 51000, "10.0.0.1", 22);
    assert_eq!(
        before_attribution(&cfg, &inbound),
        Err(Skip::RemoteWhitelisted)
    );
}

#[test]
fn process_whitelist_by_path_and_by_the_name_of_a_system_file_never_by_comm() {
    let curl = proc_("curl", "/usr/bin/curl");
    assert!(process_matches("curl", &curl));
    assert!(process_matches("/usr/bin/curl", &curl));
    assert!(!process_matches("/usr/local/bin/curl", &curl));
    assert!(!process_matches("cur", &curl));
    assert!(!process_matches("bin/curl", &curl));
    // comm is the program's own choice (prctl(PR_SET_NAME)): it never matches.
    let ff = proc_("MainThread", "/usr/lib/firefox/firefox");
    assert!(process_matches("firefox", &ff));
    assert!(!process_matches("MainThread", &ff));
    let renamed = proc_("ssh", "/usr/bin/python3");
    assert!(!process_matches("ssh", &renamed));

    // A copy named `ssh` in the user's own folder: the path matches itself only, the bare
    // name not at all.
    let copy = Process {
        exe_system: false,
        ..proc_("ssh", "/home/alice/.cache/x/ssh")
    };
    assert!(!process_matches("ssh", &copy));
    assert!(process_matches("/home/alice/.cache/x/ssh", &copy));
    // An exe the helper could not verify (another mount namespace, gone, replaced)
    // matches nothing, not even its own path.
    let unverified = Process {
        exe_verified: false,
        exe_system: false,
        exe_unverified: Some("runs in another mount namespace".into()),
        ..proc_("ssh", "/usr/bin/ssh")
    };
    assert!(!process_matches("/usr/bin/ssh", &unverified));
    assert!(!process_matches("ssh", &unverified));
    let gone = Process {
        exe: None,
        exe_verified: false,
        ..proc_("ssh", "/usr/bin/ssh")
    };
    assert!(!process_matches("ssh", &gone));

    let mut cfg = Config::default();
    assert!(
        cfg.whitelist.processes.is_empty(),
        "the default trusts no program"
    );
    cfg.whitelist.processes = vec!["firefox".into()];
    assert_eq!(
        run(&cfg, &out(443), Some(&ff)),
        Err(Skip::ProcessWhitelisted)
    );
    assert_eq!(run(&cfg, &out(443), Some(&curl)), Ok(()));
}

#[test]
fn unknown_processes_follow_show_unknown() {
    let mut cfg = Config::default();
    assert_eq!(run(&cfg, &out(443), None), Ok(()));
    cfg.filter.show_unknown = false;
    assert_eq!(run(&cfg, &out(443), None), Err(Skip::Unknown));
}

#[test]
fn critical_ports_are_numbers_not_substrings() {
    let mut cfg = Config::default();
    cfg.critical.ports = vec![80];
    assert!(is_critical(&cfg, &out(80)));
    assert!(!is_critical(&cfg, &out(8080)));
    assert!(!is_critical(&cfg, &out(8)));
    // The local port of an outbound flow does not count.
    let s = sides(Proto::Tcp, "10.0.0.1", 80, "9.9.9.9", 5000);
    assert!(!is_critical(&cfg, &s));
    // ... but for an inbound flow it does.
    let inbound = sides(Proto::Tcp, "9.9.9.9", 5000, "10.0.0.1", 80);
    assert!(is_critical(&cfg, &inbound));
    // ICMP has no ports.
    let icmp = sides(Proto::Icmp, "10.0.0.1", 0, "9.9.9.9", 0);
    cfg.critical.ports = vec![0];
    assert!(!is_critical(&cfg, &icmp));
}

#[test]
fn critical_only_drops_the_rest() {
    let mut cfg = Config::default();
    cfg.filter.critical_only = true;
    let curl = proc_("curl", "/usr/bin/curl");
    assert_eq!(run(&cfg, &out(443), Some(&curl)), Ok(()));
    assert_eq!(run(&cfg, &out(8443), Some(&curl)), Err(Skip::NotCritical));
}

#[test]
fn repeat_filter_reports_once_per_window() {
    let cfg = Config::default(); // 300 s
    let curl = proc_("curl", "/usr/bin/curl");
    let mut rep = RepeatFilter::new(16);
    let t0 = Instant::now();
    let s = out(443);
    let mut go = |s: &Sides, p: Option<&Process>, t: Instant| {
        after_attribution(&cfg, s, p, true, &mut rep, t)
    };
    assert_eq!(go(&s, Some(&curl), t0), Ok(()));
    assert_eq!(
        go(&s, Some(&curl), t0 + Duration::from_secs(10)),
        Err(Skip::Repeat)
    );
    // Another port, program or unknown process is another key.
    assert_eq!(go(&out(80), Some(&curl), t0), Ok(()));
    assert_eq!(go(&s, Some(&proc_("wget", "/usr/bin/wget")), t0), Ok(()));
    assert_eq!(go(&s, None, t0), Ok(()));
    // A suppressed repeat does not extend the window.
    assert_eq!(
        go(&s, Some(&curl), t0 + Duration::from_secs(299)),
        Err(Skip::Repeat)
    );
    assert_eq!(go(&s, Some(&curl), t0 + Duration::from_secs(300)), Ok(()));
}

#[test]
fn repeat_window_zero_reports_every_flow() {
    let mut cfg = Config::default();
    cfg.filter.repeat_after_secs = 0;
    let mut rep = RepeatFilter::new(16);
    let t0 = Instant::now();
    for _ in 0..3 {
        assert_eq!(
            after_attribution(&cfg, &out(443), None, true, &mut rep, t0),
            Ok(())
        );
    }
    assert!(rep.is_empty());
}

#[test]
fn repeat_memory_is_bounded_and_forgets_the_oldest() {
    let cfg = Config::default();
    let mut rep = RepeatFilter::new(4);
    let t0 = Instant::now();
    for port in 1..=10 {
        assert_eq!(
            after_attribution(&cfg, &out(port), None, true, &mut rep, t0),
            Ok(())
        );
    }
    assert_eq!(rep.len(), 4);
    assert_eq!(rep.evicted(), 6);
    // Port 1 was forgotten, so it is reported again; port 10 is still remembered.
    assert_eq!(
        after_attribution(&cfg, &out(1), None, true, &mut rep, t0),
        Ok(())
    );
    assert_eq!(
        after_attribution(&cfg, &out(10), None, true, &mut rep, t0),
        Err(Skip::Repeat)
    );
}

#[test]
fn whitelisted_flows_do_not_enter_the_repeat_memory() {
    let mut cfg = Config::default();
    cfg.whitelist.processes = vec!["firefox".into()];
    let mut rep = RepeatFilter::new(16);
    let ff = proc_("firefox", "/usr/lib/firefox/firefox");
    let r = after_attribution(&cfg, &out(443), Some(&ff), true, &mut rep, Instant::now());
    assert_eq!(r, Err(Skip::ProcessWhitelisted));
    assert!(rep.is_empty());
}

#[test]
fn a_shared_or_unchecked_socket_matches_no_whitelist_entry() {
    let mut cfg = Config::default();
    cfg.whitelist.processes = vec!["firefox".into(), "/usr/lib/firefox/firefox".into()];
    let ff = proc_("firefox", "/usr/lib/firefox/firefox");
    let mut rep = RepeatFilter::new(16);
    let now = Instant::now();
    assert_eq!(
        after_attribution(&cfg, &out(443), Some(&ff), true, &mut rep, now),
        Err(Skip::ProcessWhitelisted)
    );
    // The same process, its socket held by another too (or not every holder checked).
    assert_eq!(
        after_attribution(&cfg, &out(443), Some(&ff), false, &mut rep, now),
        Ok(())
    );
}

/// A flow the watched code makes is never a repeat of another program's: not by naming
/// itself after it, not by a path it cannot prove, not on a socket it shares with it.
#[test]
fn a_forged_or_shared_identity_is_never_a_repeat_of_the_real_one() {
    let cfg = Config::default();
    let mut rep = RepeatFilter::new(16);
    let t0 = Instant::now();
    let s = out(443);
    let curl = Process {
        pid: 10,
        ..proc_("curl", "/usr/bin/curl")
    };
    assert_eq!(
        after_attribution(&cfg, &s, Some(&curl), true, &mut rep, t0),
        Ok(())
    );
    let t = t0 + Duration::from_secs(1);
    // The same path and name, unverified (a mount namespace of its own, a set exe).
    let forged = Process {
        pid: 11,
        exe_verified: false,
        exe_unverified: Some("another mount namespace".into()),
        ..curl.clone()
    };
    assert_eq!(
        after_attribution(&cfg, &s, Some(&forged), true, &mut rep, t),
        Ok(())
    );
    // Its own second flow is a repeat: it is keyed by itself.
    assert_eq!(
        after_attribution(&cfg, &s, Some(&forged), true, &mut rep, t),
        Err(Skip::Repeat)
    );
    // No path at all, curl's name.
    let named = Process {
        pid: 12,
        exe: None,
        exe_verified: false,
        ..curl.clone()
    };
    assert_eq!(
        after_attribution(&cfg, &s, Some(&named), true, &mut rep, t),
        Ok(())
    );
    // curl itself, on a socket another process holds too.
    assert_eq!(
        after_attribution(&cfg, &s, Some(&curl), false, &mut rep, t),
        Ok(())
    );
    // Another binary at curl's path (replaced since) is another program.
    let replaced = Process {
        exe_file: Some(FileVersion {
            ino: 99,
            ..Default::default()
        }),
        ..curl.clone()
    };
    assert_eq!(
        after_attribution(&cfg, &s, Some(&replaced), true, &mut rep, t),
        Ok(())
    );
    // The real curl again, another pid: a repeat.
    let again = Process { pid: 13, ..curl };
    assert_eq!(
        after_attribution(&cfg, &s, Some(&again), true, &mut rep, t),
        Err(Skip::Repeat)
    );
}
