//! Captured packets into the DNS name map: any bytes, no panic, names within the limit.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut names = conntrack_tray_helper::dns::DnsNames::new(64);
    let now = std::time::Instant::now();
    names.observe_packet(data, now);
    names.observe_message(data, now);
    for ip in ["10.0.0.1", "::1"] {
        if let Some(n) = names.name_of(&ip.parse().unwrap(), now) {
            assert!(n.len() <= conntrack_tray_helper::dns::NAME_LIMIT);
        }
    }
});
