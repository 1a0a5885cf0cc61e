//! The applet's side of the window: it starts `conntrack-tray window` on demand and, while
//! that process runs, tells it over its stdin to come to the front (scrolled to a
//! destination) instead of starting a second one. Nothing of the window runs in the applet;
//! while the window is open one thread waits for it to exit, and none while it is closed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::model::GroupKey;

/// Whether the session has a display to open a window on (X11 or Wayland).
pub fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()))
}

/// The open window, if any.
#[derive(Default)]
pub struct Launcher {
    open: Option<(ChildStdin, Arc<AtomicBool>)>,
}

impl Launcher {
    /// Shows the window: the open one comes to the front, else one is started. `config` is
    /// the applet's configuration file, `focus` the destination to scroll to.
    pub fn show(&mut self, config: &Path, focus: Option<&GroupKey>) -> std::io::Result<()> {
        let line = focus.map(GroupKey::to_line).unwrap_or_default();
        if let Some((stdin, alive)) = &mut self.open {
            if alive.load(Ordering::SeqCst) {
                match writeln!(stdin, "{line}") {
                    Ok(()) => return Ok(()),
                    // A window that reads nothing (stopped, hung) has a full pipe: the
                    // applet's loop does not wait on it, and it has requests enough.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                    Err(_) => {}
                }
            }
        }
        self.open = None;
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("conntrack-tray"));
        let mut cmd = Command::new(exe);
        cmd.arg("--config")
            .arg(config)
            .args(["window", "--control"]);
        if focus.is_some() {
            cmd.args(["--focus", &line]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("the window has no stdin"))?;
        let flags = rustix::fs::fcntl_getfl(&stdin)?;
        rustix::fs::fcntl_setfl(&stdin, flags | rustix::fs::OFlags::NONBLOCK)?;
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        std::thread::Builder::new()
            .name("window-wait".into())
            .spawn(move || {
                let status = child.wait();
                flag.store(false, Ordering::SeqCst);
                match status {
                    Ok(s) if !s.success() => {
                        eprintln!("conntrack-tray: the connections window exited with {s}")
                    }
                    Err(e) => eprintln!("conntrack-tray: cannot wait for the window: {e}"),
                    Ok(_) => {}
                }
            })?;
        self.open = Some((stdin, alive));
        Ok(())
    }
}
