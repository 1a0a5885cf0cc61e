//! `import-legacy`: turns a conntrack.sh config (`/etc/conntrack_sh.conf`, a bash fragment that
//! the script `source`d) into this project's TOML.
//!
//! Only assignments are understood: `VAR=value`, `export VAR=value`, quoted values and bash
//! arrays `VAR=("a" 'b' c)`, possibly over several lines, with comments. Anything dynamic
//! (`$VAR`, `` `cmd` ``, `$(cmd)`) is never run: the setting is left at its default and named
//! in a comment of the output, as is every variable this project has no key for.

use crate::config::{Config, ProtoSel, RemoteNet};
use crate::flow::Proto;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct LegacyError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

/// A bash word, and whether it held something only bash could evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    dynamic: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Scalar(Word),
    Array(Vec<Word>),
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

impl Lexer<'_> {
    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next();
        if c == Some('\n') {
            self.line += 1;
        }
        c
    }

    fn skip_blanks(&mut self, newlines: bool) {
        while let Some(&c) = self.chars.peek() {
            if c == ' ' || c == '\t' || (newlines && c == '\n') {
                self.bump();
            } else if c == '#' {
                while let Some(&c) = self.chars.peek() {
                    if c == '\n' {
                        break;
                    }
                    self.bump();
                }
            } else if c == '\\' {
                // A line continuation.
                let mut ahead = self.chars.clone();
                ahead.next();
                if ahead.peek() == Some(&'\n') {
                    self.bump();
                    self.bump();
                } else {
                    break;
                }
            } else {
                break;
            }
        }
    }

    /// Reads one word; stops at blanks, newline, `;`, `(` or `)` outside quotes.
    fn word(&mut self) -> Result<Option<Word>, String> {
        let mut w = Word {
            text: String::new(),
            dynamic: false,
        };
        let mut any = false;
        while let Some(&c) = self.chars.peek() {
            match c {
                ' ' | '\t' | '\n' | ';' | '(' | ')' => break,
                '#' if !any => break,
                '\'' => {
                    self.bump();
                    any = true;
                    loop {
                        match self.bump() {
                            Some('\'') => break,
                            Some(c) => w.text.push(c),
                            None => return Err("unterminated single quote".into()),
                        }
                    }
                }
                '"' => {
                    self.bump();
                    any = true;
                    loop {
                        match self.bump() {
                            Some('"') => break,
                            Some('\\') => match self.bump() {
                                Some(c @ ('"' | '\\' | '$' | '`')) => w.text.push(c),
                                Some('\n') => {}
                                Some(c) => {
                                    w.text.push('\\');
                                    w.text.push(c);
                                }
                                None => return Err("unterminated double quote".into()),
                            },
                            Some(c @ ('$' | '`')) => {
                                w.dynamic = true;
                                w.text.push(c);
                            }
                            Some(c) => w.text.push(c),
                            None => return Err("unterminated double quote".into()),
                        }
                    }
                }
                '\\' => {
                    self.bump();
                    any = true;
                    match self.bump() {
                        Some('\n') | None => {}
                        Some(c) => w.text.push(c),
                    }
                }
                '$' | '`' => {
                    // Never evaluated; only skipped over so the rest of the file still parses.
                    self.bump();
                    any = true;
                    w.dynamic = true;
                    w.text.push(c);
                    let close = match (c, self.chars.peek()) {
                        ('`', _) => Some('`'),
                        ('$', Some('(')) => Some(')'),
                        ('$', Some('{')) => Some('}'),
                        _ => None,
                    };
                    if let Some(close) = close {
                        let open = if c == '`' {
                            '`'
                        } else {
                            self.bump().unwrap_or(' ')
                        };
                        let mut depth = 1;
                        loop {
                            match self.bump() {
                                Some(ch) if ch == close => {
                                    depth -= 1;
                                    if depth == 0 {
                                        break;
                                    }
                                }
                                Some(ch) if ch == open && open != close => depth += 1,
                                Some(_) => {}
                                None => return Err(format!("unterminated `{c}{open}`")),
                            }
                        }
                    }
                }
                _ => {
                    self.bump();
                    any = true;
                    w.text.push(c);
                }
            }
        }
        Ok(any.then_some(w))
    }
}

/// Parses the assignments of a bash config, in order, with their line numbers.
fn assignments(src: &str, path: &str) -> Result<Vec<(usize, String, Value)>, LegacyError> {
    let mut lx = Lexer {
        chars: src.chars().peekable(),
        line: 1,
    };
    let err = |line: usize, message: String| LegacyError {
        path: path.to_string(),
        line,
        message,
    };
    let mut out = Vec::new();
    loop {
        lx.skip_blanks(true);
        while lx.chars.peek() == Some(&';') {
            lx.bump();
            lx.skip_blanks(true);
        }
        if lx.chars.peek().is_none() {
            break;
        }
        let line = lx.line;
        let Some(first) = lx.word().map_err(|m| err(line, m))? else {
            return Err(err(
                line,
                format!("unexpected `{}`", lx.chars.peek().copied().unwrap_or(' ')),
            ));
        };
        let mut word = first;
        if word.text == "export" || word.text == "declare" || word.text == "readonly" {
            lx.skip_blanks(false);
            // `declare -a NAME=(...)`: skip options.
            loop {
                match lx.word().map_err(|m| err(line, m))? {
                    Some(w) if w.text.starts_with('-') => lx.skip_blanks(false),
                    Some(w) => {
                        word = w;
                        break;
                    }
                    None => return Err(err(line, "expected an assignment".into())),
                }
            }
        }
        let Some((name, rest)) = word.text.split_once('=') else {
            return Err(err(
                line,
                format!(
                    "not an assignment: `{}` (only VAR=value lines are understood)",
                    word.text
                ),
            ));
        };
        let name = name.to_string();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err(line, format!("`{name}` is not a variable name")));
        }
        let value = if rest.is_empty() && lx.chars.peek() == Some(&'(') {
            lx.bump();
            let mut items = Vec::new();
            loop {
                lx.skip_blanks(true);
                match lx.chars.peek() {
                    Some(')') => {
                        lx.bump();
                        break;
                    }
                    None => {
                        return Err(err(line, format!("array `{name}` is not closed with `)`")))
                    }
                    _ => match lx.word().map_err(|m| err(lx.line, m))? {
                        Some(w) => items.push(w),
                        None => {
                            return Err(err(
                                lx.line,
                                format!("unexpected character in array `{name}`"),
                            ))
                        }
                    },
                }
            }
            Value::Array(items)
        } else {
            Value::Scalar(Word {
                text: rest.to_string(),
                dynamic: word.dynamic,
            })
        };
        lx.skip_blanks(false);
        match lx.chars.peek() {
            None | Some('\n') | Some(';') => {}
            Some(_) => {
                return Err(err(
                    line,
                    format!("unexpected text after the value of `{name}`"),
                ));
            }
        }
        out.push((line, name, value));
    }
    Ok(out)
}

fn words(v: &Value) -> Vec<&Word> {
    match v {
        Value::Scalar(w) => vec![w],
        Value::Array(ws) => ws.iter().collect(),
    }
}

/// Converts a conntrack.sh config to a commented TOML document. `path` names the input in
/// errors and in the output's header.
pub fn import(src: &str, path: &str) -> Result<String, LegacyError> {
    let mut cfg = Config::default();
    let mut notes: Vec<String> = Vec::new();
    for (line, name, value) in assignments(src, path)? {
        let ws = words(&value);
        if ws.iter().any(|w| w.dynamic) {
            notes.push(format!(
                "line {line}: {name} uses a shell expansion; left at its default"
            ));
            continue;
        }
        let texts: Vec<String> = ws
            .iter()
            .map(|w| w.text.clone())
            .filter(|t| !t.is_empty())
            .collect();
        let boolean = |notes: &mut Vec<String>| -> Option<bool> {
            match texts.first().map(String::as_str) {
                Some("true") => Some(true),
                Some("false") => Some(false),
                other => {
                    notes.push(format!(
                        "line {line}: {name} is `{}`, not true or false; left at its default",
                        other.unwrap_or("")
                    ));
                    None
                }
            }
        };
        match name.as_str() {
            "WHITELISTED_PROCESSES" => cfg.whitelist.processes = texts,
            "WHITELISTED_REMOTE_IPS" => {
                cfg.whitelist.remote.clear();
                for t in texts {
                    match t.parse::<RemoteNet>() {
                        Ok(n) => cfg.whitelist.remote.push(n),
                        Err(e) => notes.push(format!("line {line}: WHITELISTED_REMOTE_IPS: {e}; skipped")),
                    }
                }
            }
            "CRITICAL_PORTS" => {
                cfg.critical.ports.clear();
                for t in texts {
                    match t.parse::<u16>() {
                        Ok(p) => cfg.critical.ports.push(p),
                        Err(_) => notes.push(format!("line {line}: CRITICAL_PORTS: `{t}` is not a port number; skipped")),
                    }
                }
            }
            "SHOW_UNKNOWN_PROCESSES" => {
                if let Some(b) = boolean(&mut notes) {
                    cfg.filter.show_unknown = b;
                }
            }
            "CRITICAL_ONLY" => {
                if let Some(b) = boolean(&mut notes) {
                    cfg.filter.critical_only = b;
                }
            }
            "PROTO_ALL" => {
                if let Some(b) = boolean(&mut notes) {
                    cfg.monitor.protocols = if b { vec![ProtoSel::All] } else { vec![ProtoSel::One(Proto::Tcp)] };
                }
            }
            "DEBUG" => notes.push(format!("line {line}: DEBUG is the command-line flag --debug=true|false")),
            "BROADCAST" => notes.push(format!("line {line}: BROADCAST is the command-line flag --broadcast=true|false")),
            "LOGFILE" => notes.push(format!("line {line}: LOGFILE is the command-line flag --log-file PATH")),
            "NOTIFY_SEND_USER" => notes.push(format!(
                "line {line}: NOTIFY_SEND_USER: notifications come from the conntrack-tray applet, run as the user"
            )),
            other => notes.push(format!("line {line}: {other} has no equivalent; ignored")),
        }
    }
    let mut out = format!("# conntrack-tray configuration imported from {path} (conntrack.sh).\n");
    for n in &notes {
        out.push_str("# ");
        out.push_str(&crate::sanitize::escape(n));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&cfg.to_toml());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"# conntrack.sh config
NOTIFY_SEND_USER="`whoami`"

# Define your whitelist of process names
WHITELISTED_PROCESSES=("firefox" "ssh" 'thunder bird' curl)  # trailing comment
export WHITELISTED_REMOTE_IPS=(
    "192.168.0.0/16"   # LAN
    2001:db8::1
    "not-an-ip"
)
CRITICAL_PORTS=("80" "443" 8443)
SHOW_UNKNOWN_PROCESSES=true
DEBUG=false
PROTO_ALL=true; CRITICAL_ONLY='false'
LOGFILE="/var/log/conntrack_sh.log"
"#;

    #[test]
    fn imports_the_seed_config() {
        let toml = import(SEED, "/etc/conntrack_sh.conf").expect("imports");
        let cfg = Config::from_toml(&toml, "imported").expect("the output parses");
        assert_eq!(
            cfg.whitelist.processes,
            vec!["firefox", "ssh", "thunder bird", "curl"]
        );
        assert_eq!(
            cfg.whitelist
                .remote
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>(),
            vec!["192.168.0.0/16", "2001:db8::1"]
        );
        assert_eq!(cfg.critical.ports, vec![80, 443, 8443]);
        assert!(cfg.filter.show_unknown);
        assert!(!cfg.filter.critical_only);
        assert_eq!(cfg.monitor.protocols, vec![ProtoSel::All]);
        assert!(
            toml.contains("# line 2: NOTIFY_SEND_USER uses a shell expansion"),
            "{toml}"
        );
        assert!(toml.contains("not-an-ip"), "{toml}");
        assert!(toml.contains("--log-file"), "{toml}");
    }

    #[test]
    fn nothing_is_ever_evaluated() {
        let toml = import("WHITELISTED_PROCESSES=($(rm -rf /) \"$HOME\")\n", "x").expect("imports");
        let cfg = Config::from_toml(&toml, "x").expect("parses");
        assert_eq!(
            cfg.whitelist.processes,
            Config::default().whitelist.processes
        );
        assert!(toml.contains("shell expansion"));
    }

    #[test]
    fn errors_name_the_line() {
        let e =
            import("A=1\nWHITELISTED_PROCESSES=(\"a\" \"b\"\n", "c.conf").expect_err("unclosed");
        assert_eq!(e.line, 2);
        assert!(e.to_string().starts_with("c.conf:2:"), "{e}");
        let e = import("\n\nPROTO_ALL=\"true\n", "c.conf").expect_err("quote");
        assert_eq!(e.line, 3);
        let e = import("echo hello\n", "c.conf").expect_err("command");
        assert!(e.message.contains("not an assignment"), "{e}");
    }

    #[test]
    fn bad_booleans_keep_the_default_with_a_note() {
        let toml = import("SHOW_UNKNOWN_PROCESSES=yes\n", "x").expect("imports");
        assert!(toml.contains("not true or false"));
        assert!(
            Config::from_toml(&toml, "x")
                .expect("parses")
                .filter
                .show_unknown
        );
    }

    #[test]
    fn hostile_values_cannot_break_the_toml() {
        let toml = import("WHITELISTED_PROCESSES=('a\"]\n[x]' \"b\\\\\")\nX$=1\n", "x");
        // `X$=1` is not a variable name: an error, not a broken document.
        assert!(toml.is_err());
        let toml = import("WHITELISTED_PROCESSES=('a\"]\n[x]' \"b\\\\\")\n", "x").expect("imports");
        let cfg = Config::from_toml(&toml, "x").expect("parses");
        assert_eq!(cfg.whitelist.processes, vec!["a\"]\n[x]", "b\\"]);
    }
}
