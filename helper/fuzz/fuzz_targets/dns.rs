//! Captured packets through the DNS parser and the name table: any bytes, no panic, names
//! within the limit.
#![no_main]
use conntrack_tray_helper::names::{dns, table};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = std::time::Instant::now();
    let mut t = table::NameTable::new(16, 64);
    for msg in [dns::segment(data).map(|s| s.msg), Some(data)].into_iter().flatten() {
        if let Some(m) = dns::parse(msg) {
            assert!(m.question.0.len() <= dns::NAME_LIMIT);
            let key = table::QueryKey {
                proto: 17,
                client: "10.0.0.1:40000".parse().unwrap(),
                server: "10.0.0.53:53".parse().unwrap(),
                id: m.id,
                question: m.question.clone(),
            };
            t.query(key.clone(), Some(1), now);
            t.answer(&key, &m, now);
            for (ip, _) in &m.addrs {
                if let Some((n, _)) = t.name_for(1, ip, now) {
                    assert!(n.len() <= dns::NAME_LIMIT);
                }
            }
        }
    }
});
