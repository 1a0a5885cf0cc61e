use super::*;

fn err(src: &str) -> ConfigError {
    match Config::from_toml(src, "test.toml") {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn embedded_default_file_matches_the_defaults_in_code() {
    let parsed = Config::from_toml(DEFAULT_TOML, "default").expect("default parses");
    assert_eq!(parsed, Config::default());
}

#[test]
fn empty_file_is_all_defaults() {
    assert_eq!(
        Config::from_toml("", "x").expect("parses"),
        Config::default()
    );
}

#[test]
fn partial_section_keeps_other_defaults() {
    let c = Config::from_toml("[filter]\nshow_unknown = false\n", "x").expect("parses");
    assert!(!c.filter.show_unknown);
    assert_eq!(c.filter.repeat_after_secs, 300);
    assert_eq!(c.critical.ports, vec![80, 443]);
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let e = err("[filter]\nshow_unknown = true\nshow_unkown = false\n");
    let msg = e.to_string();
    assert!(msg.starts_with("test.toml:3:"), "{msg}");
    assert!(msg.contains("key `filter.show_unkown`"), "{msg}");
    assert!(msg.contains("unknown field"), "{msg}");
}

#[test]
fn unknown_section_is_an_error() {
    let msg = err("[filtr]\nx = 1\n").to_string();
    assert!(msg.starts_with("test.toml:1:"), "{msg}");
    assert!(msg.contains("filtr"), "{msg}");
}

#[test]
fn wrong_type_names_the_key() {
    let msg = err("[filter]\n\nrepeat_after_secs = \"soon\"\n").to_string();
    assert!(msg.starts_with("test.toml:3:"), "{msg}");
    assert!(msg.contains("key `filter.repeat_after_secs`"), "{msg}");
}

#[test]
fn port_out_of_range_is_an_error() {
    let msg = err("[critical]\nports = [80, 70000]\n").to_string();
    assert!(msg.starts_with("test.toml:2:"), "{msg}");
    assert!(msg.contains("critical.ports"), "{msg}");
}

#[test]
fn bad_cidr_in_multiline_array_names_its_key_and_value() {
    // The toml crate spans the whole array for an element's error: the line of the key,
    // and the message quotes the bad element.
    let msg =
        err("[whitelist]\nremote = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n").to_string();
    assert!(msg.starts_with("test.toml:2:"), "{msg}");
    assert!(msg.contains("`10.0.0.0/33`"), "{msg}");
    assert!(msg.contains("key `whitelist.remote`"), "{msg}");
    assert!(msg.contains("not an IP address or CIDR"), "{msg}");
}

#[test]
fn unknown_protocol_and_direction_are_errors() {
    let msg = err("[monitor]\nprotocols = [\"tcp\", \"tpc\"]\n").to_string();
    assert!(
        msg.contains("monitor.protocols") && msg.contains("tpc"),
        "{msg}"
    );
    let msg = err("[monitor]\ndirections = [\"sideways\"]\n").to_string();
    assert!(
        msg.contains("monitor.directions") && msg.contains("sideways"),
        "{msg}"
    );
}

#[test]
fn protocols_all_and_names() {
    let c = Config::from_toml("[monitor]\nprotocols = [\"all\"]\n", "x").expect("parses");
    assert!(c.watches_proto(Proto::Sctp) && c.watches_proto(Proto::Other(99)));
    let c = Config::from_toml(
        "[monitor]\nprotocols = [\"udp\", \"icmpv6\", \"ipproto-47\"]\n",
        "x",
    )
    .expect("parses");
    assert!(c.watches_proto(Proto::Udp) && c.watches_proto(Proto::Icmpv6));
    assert!(c.watches_proto(Proto::Gre));
    assert!(!c.watches_proto(Proto::Tcp));
}

#[test]
fn remote_accepts_ips_and_cidrs_of_both_families() {
    let c = Config::from_toml(
        "[whitelist]\nremote = [\"9.9.9.9\", \"192.168.0.0/16\", \"2001:db8::/32\", \"::1\"]\n",
        "x",
    )
    .expect("parses");
    let r = &c.whitelist.remote;
    assert!(r[0].contains(&"9.9.9.9".parse().expect("ip")));
    assert!(!r[0].contains(&"9.9.9.8".parse().expect("ip")));
    assert!(r[1].contains(&"192.168.77.1".parse().expect("ip")));
    assert!(r[2].contains(&"2001:db8:ffff::1".parse().expect("ip")));
    assert!(!r[2].contains(&"2001:db9::1".parse().expect("ip")));
    // A v4-mapped v6 address is the v4 address.
    assert!(r[1].contains(&"::ffff:192.168.1.1".parse().expect("ip")));
}

#[test]
fn host_patterns_match_names_exactly_or_below_a_domain() {
    let c = Config::from_toml(
        "[whitelist]\nhosts = [\"GitHub.com\", \"*.mozilla.org\"]\n",
        "x",
    )
    .expect("parses");
    let h = &c.whitelist.hosts;
    assert!(h[0].matches("github.com") && h[0].matches("github.com."));
    assert!(!h[0].matches("api.github.com") && !h[0].matches("notgithub.com"));
    assert!(h[1].matches("addons.mozilla.org") && h[1].matches("a.b.mozilla.org"));
    assert!(!h[1].matches("mozilla.org") && !h[1].matches("evilmozilla.org"));
    let msg = err("[whitelist]\nhosts = [\"bad host!\"]\n").to_string();
    assert!(
        msg.contains("whitelist.hosts") && msg.contains("not a host name"),
        "{msg}"
    );
}

#[test]
fn toml_round_trip_of_the_effective_config() {
    let mut c = Config::default();
    c.whitelist.remote = vec![
        "10.0.0.0/8".parse().expect("net"),
        "::1".parse().expect("net"),
    ];
    c.monitor.protocols = vec![ProtoSel::All];
    let back = Config::from_toml(&c.to_toml(), "x").expect("parses");
    assert_eq!(back, c);
}

#[test]
fn json_uses_the_same_schema() {
    let c: Config = serde_json::from_str(
        r#"{"filter":{"show_unknown":false},"whitelist":{"remote":["10.1.0.0/16"]}}"#,
    )
    .expect("json parses");
    assert!(!c.filter.show_unknown);
    assert_eq!(c.whitelist.remote[0].to_string(), "10.1.0.0/16");
    assert!(serde_json::from_str::<Config>(r#"{"filtr":{}}"#).is_err());
}

#[test]
fn pins_are_checked_and_their_errors_name_line_and_key() {
    let h = "AB".repeat(32);
    let c = Config::from_toml(
        &format!("[whitelist]\npinned = [{{ program = \"/usr/bin/curl\", sha256 = \"{h}\" }}]\n"),
        "x",
    )
    .expect("parses");
    assert_eq!(c.whitelist.pinned[0].sha256.0, "ab".repeat(32));
    assert_eq!(c.whitelist.pinned[0].program.0, "/usr/bin/curl");
    let msg = err("[whitelist]\nprocesses = []\npinned = [{ program = \"/usr/bin/curl\", sha256 = \"abc\" }]\n").to_string();
    assert!(msg.starts_with("test.toml:3:"), "{msg}");
    assert!(
        msg.contains("key `whitelist.pinned`") && msg.contains("not a SHA-256"),
        "{msg}"
    );
    let msg = err(&format!(
        "[whitelist]\npinned = [{{ program = \"curl\", sha256 = \"{h}\" }}]\n"
    ))
    .to_string();
    assert!(
        msg.contains("whitelist.pinned") && msg.contains("not an absolute path"),
        "{msg}"
    );
    let msg = err(&format!(
        "[whitelist]\npinned = [{{ program = \"/x\", sha = \"{h}\" }}]\n"
    ))
    .to_string();
    assert!(
        msg.contains("whitelist.pinned") && msg.contains("unknown field"),
        "{msg}"
    );
    // Absent pins are not written, so the JSON and TOML of older settings stay as they were.
    assert!(!Config::default().to_toml().contains("pinned"));
    // `started_by`: the parent is a path, and the error names the line and key.
    let c = Config::from_toml(
        "[whitelist]\nstarted_by = [{ program = \"curl\", parent = \"/usr/bin/apt\" }]\n",
        "x",
    )
    .expect("parses");
    assert_eq!(c.whitelist.started_by[0].parent.0, "/usr/bin/apt");
    let msg =
        err("[whitelist]\n\nstarted_by = [{ program = \"curl\", parent = \"apt\" }]\n").to_string();
    assert!(msg.starts_with("test.toml:3:"), "{msg}");
    assert!(
        msg.contains("whitelist.started_by") && msg.contains("not an absolute path"),
        "{msg}"
    );
    assert!(!Config::default().to_toml().contains("started_by"));
    let back = Config::from_toml(&c.to_toml(), "x").expect("parses");
    assert_eq!(back, c);
}

#[test]
fn redacted_error_quotes_nothing_from_the_file() {
    let secret = "root:$y$j9T$secret:19000:0:99999:7:::\n";
    let e = err(secret);
    assert!(!e.redacted().contains("secret"), "{}", e.redacted());
    assert!(e.redacted().starts_with("test.toml:1:"));
}
