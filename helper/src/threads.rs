//! The helper's threads besides the main loop, and what the reader starts from: part of the
//! binary (`main.rs`), not of the library. Each thread feeds one channel of
//! [`conntrack_tray_helper::service::Inputs`].

use std::io::{self, BufReader};

use anyhow::Context;
use crossbeam_channel::Sender;

use conntrack_tray_helper::attribution::ring_records::{run_drains, RingRecords};
use conntrack_tray_helper::commands;
use conntrack_tray_helper::direction::LocalAddrs;
use conntrack_tray_helper::pickups::{SeenFromSyn, TcpBefore};
use conntrack_tray_helper::service::CommandLine;
use conntrack_tray_helper::source::conntrack::EventSocket;
use conntrack_tray_helper::source::netif::{self, AddrWatch};
use conntrack_tray_helper::source::queue::FlowSender;
use conntrack_tray_helper::source::reader::{Early, EarlyUpdates};

/// The TCP connections of the helper's network namespace now: a pickup under way is exempt
/// from the connect record check only for one of these. Unreadable, none is (a whitelisted
/// program's old connection is then reported unverified, not silenced), and it says so.
pub fn tcp_before(startup: &mut Vec<String>) -> TcpBefore {
    let v4 = procfs::net::tcp();
    let v6 = procfs::net::tcp6();
    if let Err(e) = &v4 {
        startup.push(format!(
            "cannot list the connections from before the helper (/proc/net/tcp): {e}"
        ));
    }
    let entries = v4.into_iter().chain(v6).flatten();
    TcpBefore::from_sockets(entries.map(|e| (e.local_address, e.remote_address, e.inode)))
}

/// Starts the reader thread (see `conntrack_tray_helper::source::reader`).
pub fn spawn_reader<A: conntrack_tray_helper::attribution::Attributor + Send + 'static>(
    socket: EventSocket,
    tx: FlowSender,
    early: Early<A>,
    updates: std::sync::Arc<EarlyUpdates>,
    (debug, prio): (bool, &'static str),
    before: TcpBefore,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("ct-reader".into())
        .spawn(move || {
            if debug {
                eprintln!(
                    "debug: conntrack reader runs at {prio}; {} connections from before",
                    before.len()
                );
            }
            let seen = SeenFromSyn::with_before(before);
            conntrack_tray_helper::source::reader::run_with(
                socket, tx, early, updates, debug, seen,
            );
        })
        .context("cannot start the reader thread")?;
    Ok(())
}

/// Reads command lines from stdin for the main loop; `None` when stdin ends or fails.
pub fn spawn_stdin(tx: Sender<CommandLine>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut r = BufReader::new(io::stdin());
            loop {
                match commands::read_line(&mut r) {
                    Ok(Some(c)) => {
                        if tx.send(Some(c)).is_err() {
                            return;
                        }
                    }
                    Ok(None) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                }
            }
        })
        .context("cannot start the stdin thread")?;
    Ok(())
}

/// Hands the main loop the first SIGTERM, SIGINT or SIGHUP.
pub fn spawn_signals(tx: Sender<i32>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(s) = signals.forever().next() {
                let _ = tx.send(s);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Drains the TCP connect records' and the UDP send records' rings whenever the programs say
/// one is half full (see `conntrack_tray_helper::attribution::ring_records`). Without the
/// thread, lookups still drain them; a flood in a namespace the helper hears nothing from
/// could then fill one, and the records that did not fit would be lost (their flows fail
/// closed). Said on stderr.
pub fn spawn_record_drain(rings: Vec<std::sync::Arc<RingRecords>>) {
    let spawned = std::thread::Builder::new()
        .name("records".into())
        .spawn(move || {
            let e = run_drains(&rings);
            eprintln!("conntrack-tray-helper: the records' rings are no longer drained: {e}");
        });
    if let Err(e) = spawned {
        eprintln!(
            "conntrack-tray-helper: cannot start the thread that drains the connect records: {e}"
        );
    }
}

/// Re-reads the interface addresses whenever the kernel announces a change. Without the
/// subscription the addresses read at start stay in force (reported once on stderr).
pub fn spawn_addr_watch(tx: Sender<LocalAddrs>) {
    let watch = match AddrWatch::open() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("conntrack-tray-helper: address changes will go unnoticed: {e}");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("addrs".into())
        .spawn(move || {
            let mut watch = watch;
            while watch.wait().is_ok() {
                match netif::local_addrs() {
                    Ok(a) => {
                        if tx.send(a).is_err() {
                            return;
                        }
                    }
                    Err(_) => continue,
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("conntrack-tray-helper: address changes will go unnoticed: {e}");
    }
}
