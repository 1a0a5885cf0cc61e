//! The ctnetlink parser on arbitrary datagrams: it must return, never panic or loop.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for m in conntrack_tray_helper::source::conntrack::parse_datagram(data) {
        if let Ok(conntrack_tray_helper::source::conntrack::Message::Flow(f)) = m {
            // Whatever parsed must classify and serialize.
            let sides = conntrack_tray_helper::direction::classify(&f, &Default::default());
            let _ = sides.is_loopback();
        }
    }
});
