//! One applet per session: the first one owns [`BUS_NAME`] on the session bus and serves
//! [`INTERFACE`] there, whose `Show` a second launch calls to have the running one show
//! itself, instead of starting a second tray and a second helper.
//!
//! `Show` hands a signal to the main loop over a channel; the loop decides what showing is
//! (the connections window; without a display, a notification with the status line). The
//! window's Rules view reads the mutes in force with `Mutes` and ends one with `Unmute`. Any program of the session can call it, so
//! a call does nothing else, and calls come through at most once a second: a program calling
//! it in a loop gets no flood of notifications, and cannot hold the loop up.
//!
//! Any program of the session can also take the name first. The second launch then names the
//! owner's pid, and fails when the owner does not take `Show` within [`ANSWER_WITHIN`]; an
//! owner that takes it cannot be told from the applet here, so the pid is what the person has.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

/// The D-Bus name that makes the applet one per session.
pub const BUS_NAME: &str = "io.github.conntrack_tray.Applet";
/// Where the running applet serves [`INTERFACE`].
pub const PATH: &str = "/io/github/conntrack_tray/Applet";
pub const INTERFACE: &str = "io.github.conntrack_tray.Applet";

/// The shortest time between two `Show` calls that reach the main loop.
const SHOW_EVERY: Duration = Duration::from_secs(1);
/// How long a second launch waits for the owner's answer. The running applet answers at once
/// (not from its main loop); a program that took the name and never answers would otherwise
/// hold the second launch forever.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Whether this process is the session's applet.
#[derive(Debug)]
pub enum Claim {
    /// It owns the name: it runs, and `Show` calls arrive on the channel.
    First,
    /// Another process owns the name.
    Taken,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot register on the session bus: {0}")]
    Register(Box<zbus::Error>),
    #[error("cannot connect to the session bus: {0}")]
    Connect(Box<zbus::Error>),
    /// The owner did not take the call: a version without `Show`, or not conntrack-tray.
    #[error("{owner} holds {BUS_NAME} but did not take Show: {why}")]
    NoShow { owner: String, why: String },
}

/// The mutes in force, as the main loop last published them for the connections window:
/// (the host, empty for every host; the program's key; when it ends, in seconds since 1970).
pub type Mutes = std::sync::Arc<Mutex<Vec<(String, String, u64)>>>;

/// The object served at [`PATH`].
struct Applet {
    show: Sender<()>,
    last: Mutex<Option<Instant>>,
    mutes: Mutes,
    unmute: Sender<(String, String)>,
}

#[zbus::interface(name = "io.github.conntrack_tray.Applet")]
impl Applet {
    /// Asks the running applet to show itself (the second launch calls this).
    fn show(&self) {
        let now = Instant::now();
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_some_and(|t| now.duration_since(t) < SHOW_EVERY) {
            return;
        }
        *last = Some(now);
        // Full: a Show is already waiting for the loop, which then shows once.
        if let Err(TrySendError::Disconnected(())) = self.show.try_send(()) {
            eprintln!("conntrack-tray: Show came after the applet stopped listening");
        }
    }

    /// The mutes in force (the connections window's Rules view): host ("" for every host),
    /// program, when it ends (seconds since 1970). A copy of what the main loop published; it never waits on it.
    fn mutes(&self) -> Vec<(String, String, u64)> {
        self.mutes.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Ends a mute now. Any program of the session may call it, as it may edit the
    /// configuration: it can only make the applet tell more, never less. A full queue drops
    /// the call (the window asks again).
    fn unmute(&self, host: String, program: String) {
        let _ = self.unmute.try_send((host, program));
    }
}

/// Serves [`INTERFACE`] on `bus`, then asks for [`BUS_NAME`] (in that order, so a second
/// launch that sees the name finds `Show`). `show` gets one message per `Show` let through.
pub fn claim(
    bus: &zbus::blocking::Connection,
    show: Sender<()>,
    mutes: Mutes,
    unmute: Sender<(String, String)>,
) -> Result<Claim, Error> {
    let applet = Applet {
        show,
        last: Mutex::new(None),
        mutes,
        unmute,
    };
    bus.object_server()
        .at(PATH, applet)
        .map_err(|e| Error::Register(Box::new(e)))?;
    let flags = zbus::fdo::RequestNameFlags::DoNotQueue.into();
    match bus.request_name_with_flags(BUS_NAME, flags) {
        Ok(zbus::fdo::RequestNameReply::PrimaryOwner)
        | Ok(zbus::fdo::RequestNameReply::AlreadyOwner) => Ok(Claim::First),
        Ok(_) | Err(zbus::Error::NameTaken) => Ok(Claim::Taken),
        Err(e) => Err(Error::Register(Box::new(e))),
    }
}

/// Calls `Show` on the applet that owns [`BUS_NAME`], over a connection of its own that waits
/// at most [`ANSWER_WITHIN`]; the answer says which process that is (`pid N`), for the person
/// to check.
pub fn show_running() -> Result<String, Error> {
    let bus = zbus::blocking::connection::Builder::session()
        .and_then(|b| b.method_timeout(ANSWER_WITHIN).build())
        .map_err(|e| Error::Connect(Box::new(e)))?;
    let owner = owner_pid(&bus).map_or_else(|| "a process".to_string(), |p| format!("pid {p}"));
    match bus.call_method(Some(BUS_NAME), PATH, Some(INTERFACE), "Show", &()) {
        Ok(_) => Ok(owner),
        Err(e) => Err(Error::NoShow {
            owner,
            why: match &e {
                zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                    format!("no answer within {} s", ANSWER_WITHIN.as_secs())
                }
                _ => e.to_string(),
            },
        }),
    }
}

fn owner_pid(bus: &zbus::blocking::Connection) -> Option<u32> {
    let proxy = zbus::blocking::fdo::DBusProxy::new(bus).ok()?;
    let name = zbus::names::BusName::try_from(BUS_NAME).ok()?;
    proxy.get_connection_unix_process_id(name).ok()
}
