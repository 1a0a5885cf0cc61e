//! Making sure conntrack is active in our network namespace.
//!
//! Current kernels track nothing in a namespace until some ruleset uses conntrack, and then a
//! conntrack monitor reports nothing at all. The helper adds a minimal nftables table of its
//! own, named after its pid so a second helper never touches the first one's table, and
//! removes it when it ends (the guard's `Drop`, which runs on every clean exit path including
//! SIGTERM and SIGINT). It runs the `nft` program with a fixed script: nothing read from
//! stdin or the network ever reaches it.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where Debian and others install `nft`; PATH is not trusted in a root helper.
const NFT_PATHS: [&str; 3] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

/// The table's name for a helper pid.
pub fn table_name(pid: u32) -> String {
    format!("conntrack_tray_{pid}")
}

/// The nft script that creates the table: one base chain per direction whose only rule uses
/// conntrack state (which is what switches tracking on) and accepts, changing no verdict.
pub fn create_script(table: &str) -> String {
    format!(
        "table inet {table} {{\n\
         \tcomment \"conntrack-tray-helper: makes conntrack track flows; removed when it exits\"\n\
         \tchain output {{ type filter hook output priority 0; policy accept; ct state new accept; }}\n\
         \tchain input {{ type filter hook input priority 0; policy accept; ct state new accept; }}\n\
         \tchain forward {{ type filter hook forward priority 0; policy accept; ct state new accept; }}\n\
         }}\n"
    )
}

fn nft_binary() -> Option<PathBuf> {
    NFT_PATHS.iter().map(PathBuf::from).find(|p| p.is_file())
}

fn run_nft(script: &str) -> io::Result<()> {
    let nft = nft_binary().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "the nft program is not installed (Debian: apt install nftables)",
        )
    })?;
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The helper's own nftables table; removed on drop.
pub struct ConntrackTable {
    name: String,
}

impl ConntrackTable {
    /// Adds the table for this process.
    pub fn add() -> io::Result<ConntrackTable> {
        let name = table_name(std::process::id());
        run_nft(&create_script(&name))?;
        Ok(ConntrackTable { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Removes the table now, reporting failure (Drop can only try).
    pub fn remove(mut self) -> io::Result<()> {
        let name = std::mem::take(&mut self.name);
        run_nft(&format!("delete table inet {name}\n"))
    }
}

impl Drop for ConntrackTable {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            let _ = run_nft(&format!("delete table inet {}\n", self.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_named_after_the_pid_and_touches_only_itself() {
        let s = create_script(&table_name(4242));
        assert!(s.starts_with("table inet conntrack_tray_4242 {"));
        assert_eq!(s.matches("table ").count(), 1);
        assert!(!s.contains("flush") && !s.contains("delete") && !s.contains("drop"));
        assert_eq!(s.matches("ct state new accept").count(), 3);
    }
}
