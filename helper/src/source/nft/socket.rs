//! The helper's own NETLINK_NETFILTER socket to nf_tables: it sends a batch and checks the
//! kernel's answer to every command in it, and lists the inet tables.
//!
//! The table the helper creates over this socket is owned by it (`NFT_TABLE_F_OWNER`): the
//! kernel destroys the table when the socket closes, however the helper ends, so the socket
//! lives as long as the table is wanted. It is opened close-on-exec, so no child keeps it.

use std::io;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::wire::{self, Batch, Reply, TableInfo};
use super::TableError;

/// How long the kernel may take to answer; it answers at once, so this only bounds a bug.
const REPLY_WAIT: Duration = Duration::from_secs(5);
/// Large enough for any datagram of a table dump (the kernel fills at most a page or so).
const RECV_BUF: usize = 64 * 1024;

pub struct NfSocket {
    socket: Socket,
    seq: u32,
}

/// What the kernel said about each command of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    /// The commands it refused, in the batch's order, with their errno.
    pub refused: Vec<(String, i32)>,
    /// An error of the batch as a whole (reported with BATCH_BEGIN's sequence number).
    pub commit: Option<i32>,
}

impl Answers {
    /// The first refusal as an error; `None` when the batch was applied.
    pub fn into_result(self) -> Result<(), TableError> {
        if let Some((what, errno)) = self.refused.into_iter().next() {
            return Err(TableError::Refused { what, errno });
        }
        match self.commit {
            Some(errno) => Err(TableError::Refused {
                what: "the batch".into(),
                errno,
            }),
            None => Ok(()),
        }
    }
}

impl NfSocket {
    /// Opens and binds the socket (the kernel picks its port id, which owns what it creates).
    pub fn open() -> Result<NfSocket, TableError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(TableError::Socket)?;
        socket.bind_auto().map_err(TableError::Socket)?;
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(REPLY_WAIT),
        )
        .map_err(|e| TableError::Socket(e.into()))?;
        Ok(NfSocket { socket, seq: 1 })
    }

    /// The first sequence number for the next request.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// Sends `batch` and waits for the kernel's answer to each acknowledged command.
    pub fn run(&mut self, batch: &Batch) -> Result<Answers, TableError> {
        self.seq = batch.next_seq;
        self.send(&batch.bytes)?;
        let mut pending: Vec<&(u32, String)> = batch.acked.iter().collect();
        let mut answers = Answers {
            refused: Vec::new(),
            commit: None,
        };
        let mut refused: Vec<(u32, String, i32)> = Vec::new();
        let mut buf = vec![0u8; RECV_BUF];
        // A whole-batch error (no nf_tables, a failed commit) comes with BATCH_BEGIN's
        // number; the commands' own answers may then never come, so it ends the wait.
        while let (Some((_, what)), None) = (pending.first(), answers.commit) {
            let what = what.clone();
            for reply in self.recv(&mut buf, &what)? {
                let Reply::Ack { seq, errno } = reply else {
                    continue;
                };
                if seq == batch.begin_seq && errno != 0 {
                    answers.commit = Some(errno);
                } else if let Some(i) = pending.iter().position(|(s, _)| *s == seq) {
                    let (s, what) = pending.remove(i);
                    if errno != 0 {
                        refused.push((*s, what.clone(), errno));
                    }
                }
            }
        }
        refused.sort_by_key(|(s, _, _)| *s);
        answers.refused = refused.into_iter().map(|(_, w, e)| (w, e)).collect();
        Ok(answers)
    }

    /// The inet tables of the namespace.
    pub fn list_tables(&mut self) -> Result<Vec<TableInfo>, TableError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.send(&wire::list_tables(seq))?;
        let mut tables = Vec::new();
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            for reply in self.recv(&mut buf, "the list of tables")? {
                match reply {
                    Reply::Table { seq: s, table } if s == seq => tables.push(table),
                    Reply::Done { seq: s } if s == seq => return Ok(tables),
                    Reply::Ack { seq: s, errno } if s == seq && errno != 0 => {
                        return Err(TableError::Refused {
                            what: "listing the tables".into(),
                            errno,
                        })
                    }
                    _ => {}
                }
            }
        }
    }

    fn send(&self, bytes: &[u8]) -> Result<(), TableError> {
        let sent = self.socket.send(bytes, 0).map_err(TableError::Send)?;
        if sent != bytes.len() {
            return Err(TableError::Send(io::Error::other(format!(
                "sent {sent} of {} bytes",
                bytes.len()
            ))));
        }
        Ok(())
    }

    /// One datagram's replies; `what` names the request in a time-out.
    fn recv(&self, buf: &mut [u8], what: &str) -> Result<Vec<Reply>, TableError> {
        let n = loop {
            match self.socket.recv(&mut &mut buf[..], 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(TableError::NoAnswer {
                        what: what.to_string(),
                        source,
                    })
                }
            }
        };
        let datagram = buf
            .get(..n)
            .ok_or_else(|| TableError::Malformed(format!("a datagram of {n} bytes")))?;
        wire::parse_replies(datagram).map_err(TableError::Malformed)
    }
}
