//! Stdin command lines: any bytes give a command or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = std::io::Cursor::new(data);
    while let Ok(Some(_)) = conntrack_tray_helper::commands::read_line(&mut r) {}
    let _ = conntrack_tray_helper::commands::parse(data);
});
