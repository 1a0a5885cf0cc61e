//! Making sure conntrack is active in our network namespace, and that whatever the helper adds
//! for it goes away with the helper.
//!
//! Current kernels track nothing in a namespace until some ruleset uses conntrack, and then a
//! conntrack monitor reports nothing at all. The helper adds a minimal nftables table of its
//! own, `table inet conntrack_tray_<pid>`, named after its pid so no two helpers' tables meet.
//! Its one rule, `ct state new accept`, sits in a regular chain that no hook runs: adding a
//! rule that uses conntrack is what switches tracking on (the kernel registers conntrack's own
//! hooks for the namespace), and a base chain would have had every packet of the machine pass
//! through it for nothing.
//!
//! The table is created over the helper's own NETLINK_NETFILTER socket ([`socket`]), in one
//! nf_tables batch ([`wire`]), with the kernel's owner flag (`NFT_TABLE_F_OWNER`, Linux 5.12):
//! the kernel destroys it when that socket closes, so it vanishes with the helper however the
//! helper ends (SIGKILL, a crash, the OOM killer), and no other process, another helper
//! included, can change or delete it. The socket is held by [`ConntrackTable`] for the
//! helper's life; removing the table needs no privilege then: it is closing the socket.
//!
//! On older kernels, which refuse the flag, the `nft` program adds the table and deletes it on
//! every orderly exit ([`program`]). A table left by a helper that was killed is removed by the
//! next helper at start ([`stale`]); a live helper's table is never touched.

pub mod program;
pub mod socket;
pub mod stale;
pub mod wire;

use std::io;

use socket::NfSocket;

/// The table's name for a helper pid.
pub fn table_name(pid: u32) -> String {
    format!("{}{pid}", stale::PREFIX)
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot open a netlink socket to nf_tables: {0}")]
    Socket(io::Error),
    #[error("cannot send to nf_tables: {0}")]
    Send(io::Error),
    #[error("nf_tables did not answer about {what}: {source}")]
    NoAnswer { what: String, source: io::Error },
    #[error("unreadable answer from nf_tables: {0}")]
    Malformed(String),
    #[error("the kernel refused {what}: {}", io::Error::from_raw_os_error(*errno))]
    Refused { what: String, errno: i32 },
    #[error(
        "this kernel cannot tie a table to the helper (the owner flag needs Linux 5.12): {}",
        io::Error::from_raw_os_error(*errno)
    )]
    OwnerUnsupported { errno: i32 },
    #[error("{0}")]
    Program(io::Error),
    #[error("{owned}; and with the nft program: {program}")]
    Neither {
        owned: Box<TableError>,
        program: Box<TableError>,
    },
}

/// How the table is kept.
enum Kind {
    /// Owned by this socket: it goes when the socket closes.
    Owned(NfSocket),
    /// Added by the `nft` program: deleted by it on drop.
    Program,
}

/// The helper's own nftables table, removed when this is dropped (or the process ends, for an
/// owned one).
pub struct ConntrackTable {
    name: String,
    kind: Option<Kind>,
    notes: Vec<String>,
}

impl ConntrackTable {
    /// Adds the table for this process: owned by the helper's socket, or with the `nft`
    /// program where the kernel refuses the owner flag. First removes the tables of helpers
    /// that are gone.
    pub fn add() -> Result<ConntrackTable, TableError> {
        Self::add_as(true)
    }

    /// Adds the table with the `nft` program, as on kernels without the owner flag (after the
    /// same clean-up of tables whose helper is gone). For tests of that path.
    pub fn add_with_program() -> Result<ConntrackTable, TableError> {
        Self::add_as(false)
    }

    fn add_as(owned: bool) -> Result<ConntrackTable, TableError> {
        let pid = std::process::id();
        let name = table_name(pid);
        let mut notes = Vec::new();
        let mut owned_err = None;
        match NfSocket::open() {
            Ok(mut sock) => {
                remove_stale(&mut sock, pid, &mut notes);
                if owned {
                    match create_owned(&mut sock, &name) {
                        Ok(()) => {
                            return Ok(ConntrackTable {
                                name,
                                kind: Some(Kind::Owned(sock)),
                                notes,
                            })
                        }
                        // An old kernel: the program below, as expected.
                        Err(TableError::OwnerUnsupported { .. }) => {}
                        Err(e) => owned_err = Some(e),
                    }
                }
            }
            Err(e) if owned => owned_err = Some(e),
            Err(e) => notes.push(format!(
                "could not look for nftables tables of helpers that were killed: {e}"
            )),
        }
        match (program::create(&name), owned_err) {
            (Ok(()), owned_err) => {
                if let Some(e) = owned_err {
                    notes.push(format!(
                        "the nftables table could not be tied to the helper ({e}); the nft \
                         program added it instead, so a killed helper leaves it until the next \
                         helper starts"
                    ));
                }
                Ok(ConntrackTable {
                    name,
                    kind: Some(Kind::Program),
                    notes,
                })
            }
            (Err(p), None) => Err(TableError::Program(p)),
            (Err(p), Some(e)) => Err(TableError::Neither {
                owned: Box::new(e),
                program: Box::new(TableError::Program(p)),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the kernel ties the table to this helper's socket.
    pub fn is_owned(&self) -> bool {
        matches!(self.kind, Some(Kind::Owned(_)))
    }

    /// What went wrong on the way, though a table was added (for the start-up messages).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Removes the table now, reporting failure (Drop can only try). An owned table goes when
    /// its socket closes, which cannot fail and needs no privilege.
    pub fn remove(mut self) -> io::Result<()> {
        match self.kind.take() {
            Some(Kind::Program) => program::delete(&self.name),
            Some(Kind::Owned(sock)) => {
                drop(sock);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Drop for ConntrackTable {
    fn drop(&mut self) {
        if let Some(Kind::Program) = self.kind.take() {
            let _ = program::delete(&self.name);
        }
    }
}

/// Creates the owned table; the table's own refusal of the flag means an old kernel.
fn create_owned(sock: &mut NfSocket, name: &str) -> Result<(), TableError> {
    let batch = wire::create_table(name, sock.seq(), wire::HELPER);
    let answers = sock.run(&batch)?;
    // Before 5.12 an unknown table flag is EINVAL, since then EOPNOTSUPP.
    let table = batch.acked.first().map(|(_, what)| what.as_str());
    if let Some((what, errno)) = answers.refused.first() {
        if Some(what.as_str()) == table && matches!(*errno, libc::EINVAL | libc::EOPNOTSUPP) {
            return Err(TableError::OwnerUnsupported { errno: *errno });
        }
    }
    answers.into_result()
}

/// Deletes the tables of helpers that are gone, one batch each (so one that vanished
/// meanwhile, ENOENT, stops no other); failures become notes.
fn remove_stale(sock: &mut NfSocket, pid: u32, notes: &mut Vec<String>) {
    let tables = match sock.list_tables() {
        Ok(t) => t,
        Err(e) => {
            notes.push(format!(
                "could not look for nftables tables of helpers that were killed: {e}"
            ));
            return;
        }
    };
    let own_exe = std::env::current_exe().ok();
    let own_exe = own_exe.as_deref().and_then(|p| p.file_name());
    for name in stale::stale_tables(&tables, pid, own_exe, &stale::ProcFs) {
        let batch = wire::delete_tables(std::slice::from_ref(&name), sock.seq(), true);
        let result = sock.run(&batch).and_then(|a| a.into_result());
        match result {
            Ok(())
            | Err(TableError::Refused {
                errno: libc::ENOENT,
                ..
            }) => {}
            Err(e) => notes.push(format!(
                "could not remove table inet {name}, left by a helper that is gone: {e}"
            )),
        }
    }
}
