//! Development aid: writes each conntrack event datagram the kernel sends to
//! `<dir>/<n>.bin`, for the parser's captured-bytes tests. Run as root in a test namespace:
//! `ip netns exec NS cargo run --example capture -- DIR COUNT`.

use conntrack_tray_helper::source::conntrack::{
    parse_datagram, EventSocket, GROUP_DESTROY, GROUP_NEW,
};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| ".".into());
    let count: usize = args.next().and_then(|c| c.parse().ok()).unwrap_or(10);
    let sock = EventSocket::open(&[GROUP_NEW, GROUP_DESTROY], 1 << 20)?;
    let mut buf = vec![0u8; 65536];
    for n in 0..count {
        let len = sock.recv(&mut buf)?;
        std::fs::write(format!("{dir}/{n}.bin"), &buf[..len])?;
        println!("{n}: {:?}", parse_datagram(&buf[..len]));
    }
    Ok(())
}
