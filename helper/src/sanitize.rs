//! The one sanitizer: every string that a watched program or a packet chose (process names,
//! paths, command lines, DNS names, user names, host names) passes through here before a
//! person reads it, whatever the output: JSON, text lines, the log, `wall`, notifications,
//! tray labels, tooltips, details, the clipboard.
//!
//! The rules are the same everywhere:
//! - Control characters (Unicode Cc: C0, DEL, C1) and format characters (Cf: bidirectional
//!   overrides and isolates, zero-width characters, the soft hyphen, tag characters) are
//!   never passed on raw. U+202E in a program name would otherwise reverse the destination
//!   on screen (`innocent344:34.0.242.01 → txt.exe`), and a newline would forge a line.
//! - For a person ([`display`]), runs of white space become one space (a name padded with
//!   spaces cannot push the real text out of view or fake a first line) and names are cut to
//!   a documented length with a visible `…`.
//! - Text lines escape visibly and unambiguously ([`escape`]: `\x1b`, `\u{202e}`, `\\`).
//! - JSON keeps the exact string but carries every such character as a `\uXXXX` escape
//!   ([`json_line`]), so a line never holds one raw and the applet decodes the original.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Program names are cut to this many characters for a person (the kernel's own `comm` is
/// 15; the longest file names of ordinary programs stay under 40).
pub const PROGRAM_LIMIT: usize = 48;
/// Host and DNS names for a person (a DNS name has at most 253 characters).
pub const HOST_LIMIT: usize = 80;
/// Anything else shown in one line: a path, a user, a message.
pub const LINE_LIMIT: usize = 200;

/// Unicode format characters (general category Cf, Unicode 15.1).
const FORMAT: &[(u32, u32)] = &[
    (0x00ad, 0x00ad),
    (0x0600, 0x0605),
    (0x061c, 0x061c),
    (0x06dd, 0x06dd),
    (0x070f, 0x070f),
    (0x0890, 0x0891),
    (0x08e2, 0x08e2),
    (0x180e, 0x180e),
    (0x200b, 0x200f),
    (0x202a, 0x202e),
    (0x2060, 0x2064),
    (0x2066, 0x206f),
    (0xfeff, 0xfeff),
    (0xfff9, 0xfffb),
    (0x110bd, 0x110bd),
    (0x110cd, 0x110cd),
    (0x13430, 0x1343f),
    (0x1bca0, 0x1bca3),
    (0x1d173, 0x1d17a),
    (0xe0001, 0xe0001),
    (0xe0020, 0xe007f),
];

/// True for characters that must never reach a screen or a terminal raw: Cc and Cf.
pub fn is_hidden(c: char) -> bool {
    if c.is_control() {
        return true;
    }
    let n = c as u32;
    n >= 0xad
        && FORMAT
            .binary_search_by(|&(lo, hi)| {
                if hi < n {
                    std::cmp::Ordering::Less
                } else if lo > n {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
}

fn push_escaped(out: &mut String, c: char) {
    if (c as u32) < 0x100 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:04x}}}", c as u32);
    }
}

/// Escapes hidden characters visibly (`\x1b`, `\u{202e}`) and the backslash itself (so the
/// escaping is unambiguous). Borrows when nothing changes. For text lines, the log and
/// `wall`.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || is_hidden(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if is_hidden(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One line of serialized JSON with every hidden character as a `\uXXXX` escape. Outside
/// strings JSON is ASCII without controls, so each such character stands inside a string,
/// where the escape decodes to the same character: the data is unchanged, the line is safe
/// to print.
pub fn json_line(line: &str) -> Cow<'_, str> {
    // Printable ASCII is never hidden: runs of it are stepped over by their bytes, and only
    // the other characters are decoded and looked up (the table search for every character
    // was a tenth of the helper's CPU in a burst, and decoding each character still a
    // twentieth: every line with an ancestor's cut command line has a `…`).
    let bytes = line.as_bytes();
    let mut at = 0;
    let first = loop {
        match first_unprintable(&bytes[at..]) {
            None => return Cow::Borrowed(line),
            Some(skip) => at += skip,
        }
        let Some(c) = line[at..].chars().next() else {
            return Cow::Borrowed(line);
        };
        if is_hidden(c) {
            break at;
        }
        at += c.len_utf8();
    };
    let mut out = String::with_capacity(line.len() + 16);
    out.push_str(&line[..first]);
    for c in line[first..].chars() {
        if is_hidden(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Where the first byte that is not printable ASCII is: blocks of 64 bytes are checked
/// without a branch per byte (which the compiler turns into a few vector instructions;
/// byte by byte, a 1 kB line took 2 µs on the benchmark's machine).
fn first_unprintable(bytes: &[u8]) -> Option<usize> {
    let printable = |b: u8| (b' '..0x7f).contains(&b);
    let mut at = 0;
    for block in bytes.chunks(64) {
        if !block.iter().fold(true, |ok, &b| ok & printable(b)) {
            return block.iter().position(|&b| !printable(b)).map(|i| at + i);
        }
        at += block.len();
    }
    None
}

/// A string for a person, in one line of at most `limit` characters: hidden characters
/// escaped visibly, runs of white space made one space, the ends trimmed, and a cut marked
/// with `…`.
pub fn display(s: &str, limit: usize) -> String {
    let mut out = String::with_capacity(s.len().min(limit * 4));
    let mut space = false;
    for c in s.trim().chars() {
        if c.is_whitespace() && !c.is_control() {
            space = true;
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        if is_hidden(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    cut(out, limit)
}

fn cut(s: String, limit: usize) -> String {
    match s.char_indices().nth(limit.max(1) - 1) {
        Some((i, _)) if s.chars().count() > limit => {
            let mut t = s[..i].trim_end().to_string();
            t.push('…');
            t
        }
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_shows_controls_and_format_characters_and_borrows_clean_text() {
        assert!(matches!(escape("curl"), Cow::Borrowed("curl")));
        assert_eq!(escape("a\nb"), "a\\x0ab");
        assert_eq!(escape("\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("\u{9b}c1"), "\\x9bc1");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape("zero\u{200b}width"), "zero\\u{200b}width");
        assert_eq!(escape("iso\u{2067}late"), "iso\\u{2067}late");
        assert_eq!(escape("soft\u{ad}hy"), "soft\\xadhy");
        assert_eq!(escape("tag\u{e0041}"), "tag\\u{e0041}");
        assert_eq!(
            escape("<b>markup</b> ünïcode 名前"),
            "<b>markup</b> ünïcode 名前"
        );
    }

    #[test]
    fn every_format_range_is_hidden_and_its_neighbours_are_not() {
        assert!(
            FORMAT.windows(2).all(|w| w[0].1 < w[1].0),
            "sorted, disjoint"
        );
        for &(lo, hi) in FORMAT {
            for n in [lo, hi] {
                assert!(char::from_u32(n).is_some_and(is_hidden), "{n:x}");
            }
            for n in [lo - 1, hi + 1] {
                if let Some(c) = char::from_u32(n) {
                    assert!(
                        !is_hidden(c)
                            || c.is_control()
                            || FORMAT.iter().any(|r| r.0 <= n && n <= r.1),
                        "{n:x}"
                    );
                }
            }
        }
        assert!(!is_hidden('a') && !is_hidden('é') && !is_hidden(' '));
    }

    #[test]
    fn json_lines_carry_hidden_characters_escaped_and_decode_to_the_same_string() {
        let name = "evil\u{202e}gpj.exe\u{9b}\u{e0041}\u{7f}";
        let line = serde_json::to_string(&serde_json::json!({ "comm": name })).expect("json");
        let safe = json_line(&line);
        assert!(!safe.chars().any(is_hidden), "{safe}");
        assert!(
            safe.contains("\\u202e") && safe.contains("\\udb40\\udc41"),
            "{safe}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back["comm"], name);
        assert!(matches!(json_line("{\"a\":1}"), Cow::Borrowed(_)));
        // Characters that hide nothing are passed over, before and after a hidden one.
        assert!(matches!(json_line("{\"a\":\"é…\"}"), Cow::Borrowed(_)));
        assert_eq!(
            json_line("[\"…\u{200b}é\u{7f}x\"]"),
            "[\"…\\u200bé\\u007fx\"]"
        );
        assert_eq!(json_line("\u{85}"), "\\u0085");
        // Past the first block of 64 bytes, and at its edges.
        for at in [0, 1, 63, 64, 65, 127, 128, 200] {
            let line = format!("{}\u{7f}{}", "a".repeat(at), "b".repeat(70));
            let want = format!("{}\\u007f{}", "a".repeat(at), "b".repeat(70));
            assert_eq!(json_line(&line), want, "{at}");
            assert_eq!(first_unprintable(line.as_bytes()), Some(at));
        }
        assert_eq!(first_unprintable("a".repeat(129).as_bytes()), None);
    }

    #[test]
    fn display_collapses_space_escapes_hidden_characters_and_cuts_visibly() {
        assert_eq!(
            display("  firefox \u{3000}\u{a0}  → github.com ", 80),
            "firefox → github.com"
        );
        assert_eq!(display("a\u{202e}b", 80), "a\\u{202e}b");
        // A newline is not space: it is shown, so it can fake no second line.
        assert_eq!(display("a\nfirefox", 80), "a\\x0afirefox");
        let long = "x".repeat(100);
        let shown = display(&long, 10);
        assert_eq!(shown.chars().count(), 10);
        assert!(shown.ends_with('…'));
        assert_eq!(display("short", 10), "short");
        assert_eq!(display("exactly10!", 10), "exactly10!");
    }
}
