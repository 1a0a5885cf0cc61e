//! Development aid: looks up one TCP socket by its tuple the way the helper does, and prints
//! what sock_diag and /proc answer. `lookup SRC SPORT DST DPORT [udp]`.

use conntrack_tray_helper::attribution::procfs::ProcIndex;
use conntrack_tray_helper::attribution::sock_diag::SockDiag;
use conntrack_tray_helper::attribution::{Processes, Sockets};
use conntrack_tray_helper::flow::{Family, Proto, Tuple};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(a.len() >= 4, "usage: lookup SRC SPORT DST DPORT [udp]");
    let proto = if a.get(4).map(String::as_str) == Some("udp") {
        Proto::Udp
    } else {
        Proto::Tcp
    };
    let t = Tuple {
        proto,
        src: a[0].parse()?,
        sport: a[1].parse()?,
        dst: a[2].parse()?,
        dport: a[3].parse()?,
        icmp: None,
    };
    let mut sd = SockDiag::open()?;
    let e = sd.exact(Family::of(&t.src), &t);
    println!("exact: {e:?}");
    if let Ok(Some(e)) = e {
        println!("process: {:?}", ProcIndex::new().by_inode(e.inode, e.uid));
    }
    println!(
        "dump of port {}: {:?}",
        t.sport,
        sd.dump(Family::of(&t.src), proto, false, t.sport)?.len()
    );
    Ok(())
}
