//! Tells the main loop when the settings file may have changed, so the applet need not look
//! at it on a timer: an idle applet wakes only for events (the idle target is 0.2 wakeups a
//! second, and a one-second poll alone was five times that).
//!
//! One thread blocks on inotify watches of the folder of the file and, when the file is a
//! link, of its target's folder (editors replace files by renaming, so the folder is what
//! sees it). Every event for a watched name sends one message; the main loop then compares
//! the file's modification time as before, so a spurious message costs one `stat`.

use std::ffi::OsString;
use std::io;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use std::os::unix::ffi::OsStrExt;

use crossbeam_channel::{Sender, TrySendError};
use rustix::fs::inotify;

/// Starts watching `file`; `changed` gets a message for each change seen.
pub fn settings(file: &Path, changed: Sender<()>) -> io::Result<()> {
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC)?;
    let mut names: Vec<OsString> = Vec::new();
    let target = crate::files::resolve_links(file).unwrap_or_else(|_| file.to_path_buf());
    for f in [file.to_path_buf(), target] {
        let (Some(dir), Some(name)) = (folder(&f), f.file_name()) else {
            continue;
        };
        let flags = inotify::WatchFlags::CLOSE_WRITE
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::CREATE
            | inotify::WatchFlags::DELETE
            | inotify::WatchFlags::ATTRIB;
        // A folder that does not exist yet is made when the first setting is written; then
        // the applet wrote it itself and knows.
        if inotify::add_watch(&fd, &dir, flags).is_ok() {
            names.push(name.to_os_string());
        }
    }
    std::thread::Builder::new()
        .name("settings-watch".into())
        .spawn(move || {
            let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
            let mut events = inotify::Reader::new(&fd, &mut buf);
            loop {
                let Ok(ev) = events.next() else { return };
                let ours = ev.file_name().is_some_and(|n| {
                    let n = std::ffi::OsStr::from_bytes(n.to_bytes());
                    names.iter().any(|w| w == n)
                });
                // One pending message is enough: the main loop looks at the file once.
                if ours && changed.try_send(()) == Err(TrySendError::Disconnected(())) {
                    return;
                }
            }
        })?;
    Ok(())
}

fn folder(f: &Path) -> Option<PathBuf> {
    match f.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(PathBuf::from(".")),
        Some(p) => Some(p.to_path_buf()),
        None => None,
    }
}
