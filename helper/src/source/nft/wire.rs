//! The nf_tables messages of the helper's table, as bytes: the batch that creates it, the one
//! that deletes tables by name, the request that lists tables, and the kernel's replies.
//!
//! The messages are built with `netlink-packet-netfilter` (rust-netlink's nf_tables types,
//! pure Rust) and `netlink-packet-core`; the `ct` expression, which that crate has no type for,
//! is written as its two attributes. The bytes are checked against what `nft -f` sent for the
//! same ruleset (`tests/data/nft_*.bin`, captured with `strace -e write=3`): with nft's netlink
//! flags and sequence numbers the create batch is equal byte for byte, and the helper's own
//! differs only in those flags and in the table's owner flag. Replies are parsed into
//! [`Reply`] values; a malformed one is an error, never a panic.

use netlink_packet_core::{
    DefaultNla, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK,
    NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::Bitwise;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Cmp, DataAttribute, Expressions, Immediate, NfTablesMessage,
    Operator, Register, RuleAttribute, RuleMessage, TableAttribute, TableFlags, TableMessage,
    Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

/// The nfnetlink subsystem of nf_tables (the batch messages name it in `res_id`).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `enum nft_ct_attributes` and `enum nft_ct_keys`.
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATE: u32 = 0;
/// The `new` bit of the conntrack state register (`NF_CT_STATE_BIT(IP_CT_NEW)`).
const CT_STATE_NEW: u32 = 1 << 3;
/// `NF_ACCEPT`.
const NF_ACCEPT: u32 = 1;
/// `NFTNL_UDATA_TABLE_COMMENT`: the type of a table comment in its user data.
const UDATA_TABLE_COMMENT: u8 = 0;
const NLMSG_ALIGNTO: usize = 4;

/// The comment on the table, for whoever lists the ruleset.
pub const COMMENT: &str =
    "conntrack-tray-helper: makes conntrack track flows; removed when it exits";
// The comment's length, with its NUL, is one byte in the user data.
const _: () = assert!(COMMENT.len() < u8::MAX as usize);

/// The table's one chain: a regular chain (no hook, so no packet runs through it) holding
/// one `ct state new accept` rule, there only to switch conntrack on.
pub const CHAIN: &str = "track";

/// The netlink flags of each message and the table's own flags: all that differs between the
/// helper's create batch and the one `nft -f` sends for the same ruleset.
#[derive(Debug, Clone, Copy)]
pub struct Flavor {
    pub table: u16,
    pub chain: u16,
    pub rule: u16,
    pub owner: bool,
}

/// The helper's: every command acknowledged, the table created afresh (an existing one is
/// EEXIST, never silently updated), and owned by the sending socket (`NFT_TABLE_F_OWNER`).
pub const HELPER: Flavor = Flavor {
    table: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    chain: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
    rule: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
    owner: true,
};

/// What nft 1.0.6 sends for the same ruleset (no acks, no owner flag): the fixture's flags.
#[cfg(test)]
pub const NFT_1_0_6: Flavor = Flavor {
    table: NLM_F_REQUEST,
    chain: NLM_F_REQUEST | NLM_F_CREATE,
    rule: NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND,
    owner: false,
};

/// A batch ready to send, and what each acknowledged message of it does (by sequence number),
/// so an error names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub acked: Vec<(u32, String)>,
    /// The sequence number of BATCH_BEGIN: a commit error comes back with it.
    pub begin_seq: u32,
    /// The first sequence number after the batch's.
    pub next_seq: u32,
}

struct Builder {
    batch: Batch,
    seq: u32,
}

impl Builder {
    fn new(first_seq: u32) -> Builder {
        let mut b = Builder {
            batch: Batch {
                bytes: Vec::new(),
                acked: Vec::new(),
                begin_seq: first_seq,
                next_seq: first_seq,
            },
            seq: first_seq,
        };
        b.control(netlink_packet_netfilter::none::ControlMessage::BatchBegin);
        b
    }

    fn control(&mut self, msg: netlink_packet_netfilter::none::ControlMessage) {
        let header = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES);
        self.push(NetfilterMessage::new(header, msg), NLM_F_REQUEST, None);
    }

    fn command(&mut self, msg: NfTablesMessage, flags: u16, what: String) {
        let header = NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0);
        self.push(NetfilterMessage::new(header, msg), flags, Some(what));
    }

    fn push(&mut self, msg: NetfilterMessage, flags: u16, what: Option<String>) {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        if let (true, Some(what)) = (flags & NLM_F_ACK != 0, what) {
            self.batch.acked.push((seq, what));
        }
        emit(&mut self.batch.bytes, msg, flags, seq);
    }

    fn finish(mut self) -> Batch {
        self.control(netlink_packet_netfilter::none::ControlMessage::BatchEnd);
        self.batch.next_seq = self.seq;
        self.batch
    }
}

/// Appends one message, its header finalized (length and type from the payload), padded to
/// netlink's alignment.
fn emit(out: &mut Vec<u8>, msg: NetfilterMessage, flags: u16, seq: u32) {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    nl.finalize();
    let start = out.len();
    out.resize(start + nl.buffer_len(), 0);
    nl.serialize(&mut out[start..]);
    out.resize(out.len().next_multiple_of(NLMSG_ALIGNTO), 0);
}

/// The table's user data: its comment, as libnftnl lays it out (type, length, text, NUL).
fn comment_udata() -> Vec<u8> {
    let mut v = vec![UDATA_TABLE_COMMENT, (COMMENT.len() + 1) as u8];
    v.extend_from_slice(COMMENT.as_bytes());
    v.push(0);
    v
}

fn be32(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

/// `ct state new accept`: load the state, keep its `new` bit, compare with zero, accept.
/// Loading a conntrack key is what makes the kernel track the namespace (`nf_ct_netns_get`);
/// accept ends only this chain, so no other table's verdict changes.
fn ct_state_new_accept() -> Vec<Expressions> {
    // The state register holds a host-order u32.
    let zero = vec![0; 4];
    vec![
        Expressions::Other {
            expression_type: "ct".into(),
            attributes: vec![
                DefaultNla::new(NFTA_CT_KEY, be32(NFT_CT_STATE)),
                DefaultNla::new(NFTA_CT_DREG, be32(Register::Reg1.into())),
            ],
        },
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(4),
            Bitwise::Mask(DataAttribute::Value(CT_STATE_NEW.to_ne_bytes().to_vec())),
            Bitwise::Xor(DataAttribute::Value(zero.clone())),
        ]),
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::NotEqual),
            Cmp::Data(DataAttribute::Value(zero)),
        ]),
        Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Verdict),
            Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
                Verdict::Other(NF_ACCEPT),
            )])),
        ]),
    ]
}

/// The batch that creates `table inet NAME` with its comment, its regular chain [`CHAIN`]
/// and that chain's rule.
pub fn create_table(name: &str, first_seq: u32, flavor: Flavor) -> Batch {
    let mut b = Builder::new(first_seq);
    let flags = if flavor.owner {
        TableFlags::Owner
    } else {
        TableFlags::empty()
    };
    let table = TableMessage {
        attributes: vec![
            TableAttribute::Name(name.into()),
            TableAttribute::Flags(flags),
            TableAttribute::UserData(comment_udata()),
        ],
    };
    b.command(
        NfTablesMessage::NewTable(table),
        flavor.table,
        format!("table inet {name}"),
    );
    let chain = ChainMessage {
        attributes: vec![
            ChainAttribute::Table(name.into()),
            ChainAttribute::Name(CHAIN.into()),
        ],
    };
    b.command(
        NfTablesMessage::NewChain(chain),
        flavor.chain,
        format!("chain {CHAIN}"),
    );
    let rule = RuleMessage {
        attributes: vec![
            RuleAttribute::Table(name.into()),
            RuleAttribute::Chain(CHAIN.into()),
            RuleAttribute::Expressions(ct_state_new_accept().into_iter().map(Into::into).collect()),
        ],
    };
    b.command(
        NfTablesMessage::NewRule(rule),
        flavor.rule,
        format!("the ct state rule of chain {CHAIN}"),
    );
    b.finish()
}

/// The batch that deletes each `table inet NAME` of `names`, acknowledged when `ack`.
pub fn delete_tables(names: &[String], first_seq: u32, ack: bool) -> Batch {
    let mut b = Builder::new(first_seq);
    let flags = if ack {
        NLM_F_REQUEST | NLM_F_ACK
    } else {
        NLM_F_REQUEST
    };
    for name in names {
        let msg = TableMessage {
            attributes: vec![TableAttribute::Name(name.clone())],
        };
        b.command(
            NfTablesMessage::DeleteTable(msg),
            flags,
            format!("deleting table inet {name}"),
        );
    }
    b.finish()
}

/// The request that dumps the inet tables.
pub fn list_tables(seq: u32) -> Vec<u8> {
    let header = NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0);
    let msg = NetfilterMessage::new(
        header,
        NfTablesMessage::GetTable(TableMessage { attributes: vec![] }),
    );
    let mut out = Vec::new();
    emit(&mut out, msg, NLM_F_REQUEST | NLM_F_DUMP, seq);
    out
}

/// One inet table as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub name: String,
    /// Owned by a netlink socket (`NFT_TABLE_F_OWNER`): it goes away with that socket, and no
    /// other socket may change it.
    pub owned: bool,
}

/// One message from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An acknowledgement (`errno` 0) or an error (`errno` > 0) for request `seq`.
    Ack { seq: u32, errno: i32 },
    /// One table of a dump.
    Table { seq: u32, table: TableInfo },
    /// The end of a dump.
    Done { seq: u32 },
    /// Anything else: skipped.
    Other,
}

/// Parses every message of one datagram. A malformed message is an error: its length cannot
/// be trusted to find the next one.
pub fn parse_replies(datagram: &[u8]) -> Result<Vec<Reply>, String> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let len = NetlinkBuffer::new_checked(rest)
            .map_err(|e| e.to_string())?
            .length() as usize;
        let one = rest.get(..len).ok_or("netlink length past the datagram")?;
        out.push(parse_reply(one)?);
        rest = rest
            .get(len.next_multiple_of(NLMSG_ALIGNTO)..)
            .unwrap_or(&[]);
    }
    Ok(out)
}

fn parse_reply(one: &[u8]) -> Result<Reply, String> {
    let msg = NetlinkMessage::<NetfilterMessage>::deserialize(one).map_err(|e| e.to_string())?;
    let seq = msg.header.sequence_number;
    Ok(match msg.payload {
        NetlinkPayload::Error(e) => Reply::Ack {
            seq,
            errno: e.code.map_or(0, |c| c.get().saturating_neg()),
        },
        NetlinkPayload::Done(_) => Reply::Done { seq },
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::NfTables(NfTablesMessage::NewTable(t)),
            ..
        }) => {
            let mut name = None;
            let mut owned = false;
            for a in t.attributes {
                match a {
                    TableAttribute::Name(n) => name = Some(n),
                    TableAttribute::Flags(f) => owned |= f.contains(TableFlags::Owner),
                    TableAttribute::Owner(_) => owned = true,
                    _ => {}
                }
            }
            let name = name.ok_or("a listed table without a name")?;
            Reply::Table {
                seq,
                table: TableInfo { name, owned },
            }
        }
        _ => Reply::Other,
    })
}

// The fixtures were captured on a little-endian machine (the state mask is host order).
#[cfg(test)]
#[cfg(target_endian = "little")]
mod tests {
    use super::*;

    /// What nft 1.0.6 sent on Linux 6.18 (`strace -e trace=sendmsg -e write=3`) for
    /// `nft -f tests/data/nft_add_table.nft` and `nft delete table inet conntrack_tray_4242`:
    /// the one sendmsg of each batch.
    const NFT_ADD: &[u8] = include_bytes!("../../../tests/data/nft_add_table.bin");
    const NFT_DELETE: &[u8] = include_bytes!("../../../tests/data/nft_delete_table.bin");
    const NAME: &str = "conntrack_tray_4242";

    #[test]
    fn the_create_batch_is_nfts_byte_for_byte() {
        let b = create_table(NAME, 0, NFT_1_0_6);
        assert_eq!(b.bytes.len(), NFT_ADD.len());
        assert_eq!(b.bytes, NFT_ADD);
        assert!(b.acked.is_empty());
    }

    #[test]
    fn the_fixture_was_made_from_the_programs_script() {
        let script = include_str!("../../../tests/data/nft_add_table.nft");
        assert_eq!(super::super::program::create_script(NAME), script);
        assert!(script.contains(COMMENT));
        assert!(script.contains(&format!("chain {CHAIN} {{ ct state new accept; }}")));
    }

    /// Offsets where two buffers of equal length differ.
    fn diff(a: &[u8], b: &[u8]) -> Vec<usize> {
        assert_eq!(a.len(), b.len());
        (0..a.len()).filter(|&i| a[i] != b[i]).collect()
    }

    /// The offsets of each message in a batch.
    fn starts(bytes: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < bytes.len() {
            out.push(at);
            let len = NetlinkBuffer::new_checked(&bytes[at..])
                .expect("a message")
                .length();
            let len = len as usize;
            at += len.next_multiple_of(4);
        }
        out
    }

    #[test]
    fn the_helpers_batch_differs_only_in_flags_and_the_owner_bit() {
        let ours = create_table(NAME, 0, HELPER);
        let msgs = starts(NFT_ADD);
        assert_eq!(msgs.len(), 5, "begin, table, chain, rule, end");
        // nlmsg_flags is bytes 6..8 of each header; the table's NFTA_TABLE_FLAGS value is at
        // 16 (nlmsghdr) + 4 (nfgenmsg) + 24 (its name attribute) + 4 (attribute header).
        let table_flags = msgs[1] + 16 + 4 + 24 + 4;
        let mut expected: Vec<usize> = msgs[1..4].iter().map(|m| m + 6).collect();
        expected.push(table_flags + 3);
        // REQUEST|ACK|CREATE|EXCL is 0x0605 against REQUEST: both bytes differ for the table,
        // the low byte (the ACK bit) alone for the chain and the rule.
        expected.push(msgs[1] + 7);
        expected.sort();
        assert_eq!(diff(&ours.bytes, NFT_ADD), expected);
        assert_eq!(ours.bytes[table_flags..table_flags + 4], [0, 0, 0, 2]);
        let seqs: Vec<u32> = ours.acked.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=3).collect::<Vec<_>>());
        assert_eq!((ours.begin_seq, ours.next_seq), (0, 5));
        assert_eq!(ours.acked[0].1, "table inet conntrack_tray_4242");
    }

    #[test]
    fn the_delete_batch_is_nfts_byte_for_byte() {
        let b = delete_tables(&[NAME.to_string()], 0, false);
        assert_eq!(b.bytes, NFT_DELETE);
        let acked = delete_tables(&[NAME.into(), "conntrack_tray_7".into()], 10, true);
        assert_eq!(acked.acked.len(), 2);
        assert_eq!(acked.acked[1].0, 12);
        assert_eq!(starts(&acked.bytes).len(), 4);
    }

    #[test]
    fn the_list_request_dumps_inet_tables() {
        let req = list_tables(5);
        assert_eq!(
            req,
            [20, 0, 0, 0, 0x01, 0x0a, 0x01, 0x03, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
        );
    }

    fn ack(seq: u32, code: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&36u32.to_ne_bytes());
        v.extend_from_slice(&2u16.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&77u32.to_ne_bytes());
        v.extend_from_slice(&code.to_ne_bytes());
        // The request's header (capped ack).
        v.extend_from_slice(&[16, 0, 0, 0, 0, 0x0a, 5, 0]);
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v
    }

    #[test]
    fn acks_and_errors_are_read_with_their_sequence_numbers() {
        let mut d = ack(3, 0);
        d.extend(ack(4, -libc::EOPNOTSUPP));
        assert_eq!(
            parse_replies(&d),
            Ok(vec![
                Reply::Ack { seq: 3, errno: 0 },
                Reply::Ack {
                    seq: 4,
                    errno: libc::EOPNOTSUPP
                },
            ])
        );
    }

    #[test]
    fn a_listed_table_reads_back_with_its_owner_flag() {
        // A NEWTABLE as the kernel sends it in a dump is laid out as the one we send.
        for (owner, owned) in [(true, true), (false, false)] {
            let flavor = Flavor { owner, ..HELPER };
            let b = create_table("conntrack_tray_9", 0, flavor);
            let table = &b.bytes[starts(&b.bytes)[1]..starts(&b.bytes)[2]];
            assert_eq!(
                parse_replies(table),
                Ok(vec![Reply::Table {
                    seq: 1,
                    table: TableInfo {
                        name: "conntrack_tray_9".into(),
                        owned
                    }
                }])
            );
        }
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let good = ack(1, 0);
        for cut in 0..good.len() {
            let _ = parse_replies(&good[..cut]);
        }
        let mut long = good.clone();
        long[0] = 200;
        assert!(parse_replies(&long).is_err());
        let mut short = good;
        short[0] = 3;
        assert!(parse_replies(&short).is_err());
    }
}
