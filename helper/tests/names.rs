//! Names from DNS, in the real helper against the real kernel: the name a program looked up
//! names its connection and can be whitelisted; with reverse DNS on, an address no answer
//! named gets its PTR name, marked as such.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;

use std::time::Duration;

use common::{config_file, is_conn_to, pid_of, require, root_or_skip, Helper, Net, WAIT};
use serde_json::Value;

#[test]
fn the_name_looked_up_over_dns_names_the_connection_and_can_be_whitelisted() {
    let test = "the_name_looked_up_over_dns_names_the_connection_and_can_be_whitelisted";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080, 8081]);
    let b4 = net.b4();
    net.start_peer(&net.b.clone(), &["dns", "0.0.0.0", &b4]);
    net.set_resolver(&b4);
    let h = Helper::start(&net.a, &[]);
    // example.test -> CNAME edge.cdn.test -> A b: the connection is to "example.test".
    let (pid, _) = net.client(&net.a, &["resolve", "example.test", &b4, "8080"]);
    let v = h.wait_for(WAIT, is_conn_to(8080)).expect("line");
    assert_eq!(v["host"], "example.test", "{v}");
    assert_eq!(v["host_source"], "dns");
    assert_eq!(pid_of(&v), Some(u64::from(pid)));
    drop(h);

    // Whitelisted by name: silent; another name to the same address is not.
    let (_d, cfg) = config_file("[whitelist]\nhosts = [\"example.test\"]\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    net.client(&net.a, &["resolve", "example.test", &b4, "8080"]);
    net.client(&net.a, &["resolve", "other.test", &b4, "8081"]);
    let conns: Vec<Value> = h
        .collect(Duration::from_secs(2))
        .into_iter()
        .filter(|v| v["type"] == "connection")
        .collect();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0]["host"], "other.test");
}

#[test]
fn reverse_dns_names_an_address_no_answer_named_and_says_so() {
    let test = "reverse_dns_names_an_address_no_answer_named_and_says_so";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let b4 = net.b4();
    net.start_peer(&net.b.clone(), &["dns", "0.0.0.0", &b4]);
    // Off by default: no name for a connection made without a lookup.
    let h = Helper::start(&net.a, &[]);
    net.client(&net.a, &["connect", &b4, "8080", "0.1"]);
    let v = h.wait_for(WAIT, is_conn_to(8080)).expect("line");
    assert!(v.get("host").is_none(), "{v}");
    drop(h);
    // On: the PTR name, marked as such; it does not count for whitelist.hosts.
    let (_d, cfg) = config_file(&format!(
        "[names]\nreverse_dns = true\nreverse_timeout_ms = 1000\nresolver = \"{b4}\"\n[whitelist]\nhosts = [\"ptr.example.test\"]\n"
    ));
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    net.client(&net.a, &["connect", &b4, "8080", "0.1"]);
    let v = h.wait_for(WAIT, is_conn_to(8080)).expect("line");
    assert_eq!(v["host"], "ptr.example.test", "{v}");
    assert_eq!(v["host_source"], "ptr");
}
