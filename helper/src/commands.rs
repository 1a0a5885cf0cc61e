//! Commands on stdin, one JSON object per line: how the applet steers the helper.
//!
//! The helper runs as root and the commands come from a user's process, so a command can only
//! change the in-memory filter or pause it: no command names a file to write or a program to
//! run. A malformed line is answered with an `error` event and skipped; it never ends the
//! helper.
//!
//! [`Command`] is the one definition of the wire form on both sides: the helper reads it with
//! [`parse`], the applet writes it with [`Command::to_line`], and a round trip of each command
//! is tested here.

use std::io::{self, BufRead};

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The longest command line accepted; longer ones are skipped up to their newline.
pub const MAX_LINE: usize = 1 << 20;

/// One command. It serializes to exactly the wire form [`parse`] accepts:
/// `{"cmd":"config","config":{...}}`, `{"cmd":"pause"}`, `{"cmd":"resume"}`,
/// `{"cmd":"heartbeat"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Command {
    /// Replace the filter configuration (same schema as the TOML file).
    Config {
        config: Box<Config>,
    },
    Pause,
    Resume,
    /// "The applet is still there." After the first one the helper expects another within
    /// [`HEARTBEAT_TIMEOUT`] and exits (removing its table) when none comes: a laptop that
    /// vanished without closing the ssh link leaves no root helper behind. Not acknowledged.
    Heartbeat,
}

/// How long a helper that has heard a heartbeat waits for the next before it exits.
pub const HEARTBEAT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often the applet sends one: twice within the timeout, and an idle helper wakes for it
/// (its stdin thread and its loop) 0.14 times a second, within the idle target of 0.2.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(14);

/// The wire form: `{"cmd": NAME, ...arguments}`. Parsed in two steps so that unknown keys
/// are refused for every command (serde cannot deny them on internally tagged unit variants).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    cmd: String,
    #[serde(default)]
    config: Option<Box<Config>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command line longer than {MAX_LINE} bytes ignored")]
    TooLong,
    #[error("command is not UTF-8")]
    NotUtf8,
    #[error("bad command: {0}")]
    Invalid(String),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Config { .. } => "config",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Heartbeat => "heartbeat",
        }
    }

    /// The command as one line of the wire form, without its newline (JSON never needs a raw
    /// newline: serde_json escapes them in strings). Fails only if the configuration cannot
    /// be written as JSON, which the derived types never do.
    pub fn to_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// Parses one line (without its newline).
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let text = std::str::from_utf8(line).map_err(|_| CommandError::NotUtf8)?;
    let raw: Raw =
        serde_json::from_str(text.trim()).map_err(|e| CommandError::Invalid(e.to_string()))?;
    let invalid = |m: &str| Err(CommandError::Invalid(m.to_string()));
    match (raw.cmd.as_str(), raw.config) {
        ("config", Some(config)) => Ok(Command::Config { config }),
        ("config", None) => invalid("`config` needs a `config` object"),
        ("pause", None) => Ok(Command::Pause),
        ("resume", None) => Ok(Command::Resume),
        ("heartbeat", None) => Ok(Command::Heartbeat),
        ("pause" | "resume" | "heartbeat", Some(_)) => {
            invalid("only `config` takes a `config` object")
        }
        _ => Err(CommandError::Invalid(format!(
            "unknown command `{}` (expected config, pause, resume or heartbeat)",
            crate::sanitize::escape(&raw.cmd)
        ))),
    }
}

/// Reads the next non-empty line, bounded by [`MAX_LINE`]. `Ok(None)` at end of input.
pub fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<Result<Command, CommandError>>> {
    loop {
        let mut line = Vec::new();
        let n = io::Read::take(&mut *r, MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        if line.len() > MAX_LINE && line.last() != Some(&b'\n') {
            // Skip the rest of the oversized line.
            let mut sink = Vec::new();
            loop {
                sink.clear();
                let m = io::Read::take(&mut *r, MAX_LINE as u64).read_until(b'\n', &mut sink)?;
                if m == 0 || sink.last() == Some(&b'\n') {
                    break;
                }
            }
            return Ok(Some(Err(CommandError::TooLong)));
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        return Ok(Some(parse(&line)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_commands() {
        assert_eq!(parse(br#"{"cmd":"pause"}"#), Ok(Command::Pause));
        assert_eq!(parse(br#" {"cmd":"resume"} "#), Ok(Command::Resume));
        assert_eq!(parse(br#"{"cmd":"heartbeat"}"#), Ok(Command::Heartbeat));
        assert_eq!(
            Command::Heartbeat.to_line().expect("json"),
            r#"{"cmd":"heartbeat"}"#
        );
        let c = parse(br#"{"cmd":"config","config":{"filter":{"critical_only":true}}}"#)
            .expect("config");
        match c {
            Command::Config { config } => assert!(config.filter.critical_only),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_malformed_commands_with_a_reason() {
        for bad in [
            &b"not json"[..],
            br#"{"cmd":"reboot"}"#,
            br#"{"cmd":"pause","extra":1}"#,
            br#"{"cmd":"config","config":{"filter":{"nope":1}}}"#,
            br#"{"cmd":"config","config":{"whitelist":{"remote":["10.0.0.0/99"]}}}"#,
            br#"{"nocmd":true}"#,
            br#"{"cmd":"config"}"#,
            br#"{"cmd":"pause","config":{}}"#,
            b"[]",
        ] {
            assert!(
                matches!(parse(bad), Err(CommandError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(b"\xff\xfe"), Err(CommandError::NotUtf8));
    }

    #[test]
    fn every_command_round_trips_through_its_wire_form() {
        let mut config = Config::default();
        config.filter.critical_only = true;
        config.whitelist.processes.push("/usr/bin/curl".into());
        config.whitelist.processes.push("/tmp/two\nlines".into());
        for cmd in [
            Command::Config {
                config: Box::new(config),
            },
            Command::Config {
                config: Box::default(),
            },
            Command::Pause,
            Command::Resume,
        ] {
            let line = cmd.to_line().expect("serialize");
            assert!(!line.contains('\n'), "{line}");
            assert!(
                line.starts_with(&format!("{{\"cmd\":\"{}\"", cmd.name())),
                "{line}"
            );
            assert_eq!(parse(line.as_bytes()), Ok(cmd), "{line}");
        }
        assert_eq!(
            Command::Pause.to_line().expect("pause"),
            r#"{"cmd":"pause"}"#
        );
        assert_eq!(
            Command::Resume.to_line().expect("resume"),
            r#"{"cmd":"resume"}"#
        );
    }

    #[test]
    fn reads_lines_skips_blank_ones_and_survives_huge_ones() {
        let mut input = Vec::new();
        input.extend_from_slice(b"\n  \n{\"cmd\":\"pause\"}\n");
        input.extend(std::iter::repeat_n(b'x', MAX_LINE * 2 + 5));
        input.extend_from_slice(b"\n{\"cmd\":\"resume\"}");
        let mut r = io::Cursor::new(input);
        assert_eq!(read_line(&mut r).expect("io"), Some(Ok(Command::Pause)));
        assert_eq!(
            read_line(&mut r).expect("io"),
            Some(Err(CommandError::TooLong))
        );
        assert_eq!(read_line(&mut r).expect("io"), Some(Ok(Command::Resume)));
        assert_eq!(read_line(&mut r).expect("io"), None);
    }
}
