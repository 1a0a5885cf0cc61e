//! The fallback for kernels before 5.12, which cannot tie a table to its creator: the table
//! is added and deleted by the `nft` program, as the helper always did. Such a table outlives
//! a helper killed with SIGKILL; the next helper removes it at start ([`super::stale`]).
//!
//! It runs `nft` from a fixed path with an empty environment and a fixed script: nothing read
//! from stdin or the network ever reaches it.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::wire::{CHAIN, COMMENT};

/// Where Debian and others install `nft`; PATH is not trusted in a root helper.
const NFT_PATHS: [&str; 3] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

/// The nft script that creates the table: one regular chain, which no packet ever enters,
/// whose only rule uses conntrack state. Adding a rule that uses conntrack is what switches
/// tracking on in the namespace; a base chain would also have every packet of the machine run
/// through it, which costs each packet and does nothing. It is the ruleset of
/// [`super::wire::create_table`], whose bytes are checked against nft's.
pub fn create_script(table: &str) -> String {
    format!(
        "table inet {table} {{\n\
         \tcomment \"{COMMENT}\"\n\
         \tchain {CHAIN} {{ ct state new accept; }}\n\
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

/// Adds `table inet NAME` with [`create_script`].
pub fn create(name: &str) -> io::Result<()> {
    run_nft(&create_script(name))
}

/// Deletes `table inet NAME`.
pub fn delete(name: &str) -> io::Result<()> {
    run_nft(&format!("delete table inet {name}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_named_after_the_pid_and_touches_only_itself() {
        let s = create_script(&super::super::table_name(4242));
        assert!(s.starts_with("table inet conntrack_tray_4242 {"));
        assert_eq!(s.matches("table ").count(), 1);
        assert!(!s.contains("flush") && !s.contains("delete") && !s.contains("drop"));
        assert_eq!(s.matches("ct state new accept").count(), 1);
        assert!(!s.contains("hook"), "no packet goes through the table: {s}");
    }
}
