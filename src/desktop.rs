//! The desktop's own programs the applet hands work to: `wl-copy` or `xclip` for the
//! clipboard. Each is started and reaped in the background, so the main loop
//! never waits on them; the caller tells the person when none could be started.

use std::io::Write;
use std::process::{Command, Stdio};

/// Puts text on the clipboard with wl-copy or xclip; false when neither could be started
/// (the caller shows the text instead).
pub fn copy(text: &str) -> bool {
    for (prog, args) in [
        ("wl-copy", &[][..]),
        ("xclip", &["-selection", "clipboard"][..]),
    ] {
        if let Ok(mut c) = Command::new(prog)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            if let Some(mut stdin) = c.stdin.take() {
                let _ = stdin.write_all(text.as_bytes());
            }
            std::thread::spawn(move || c.wait());
            return true;
        }
    }
    false
}
