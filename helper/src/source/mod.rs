//! Where flows come from: the kernel's conntrack events and what the helper needs to read them.
//!
//! [`conntrack`] opens the ctnetlink subscription and parses its messages into [`crate::flow`]
//! values; [`reader`] is the thread that drains the socket into a bounded queue (and, when
//! idle, attributes a flow on the spot); [`nft`] switches conntrack on in a namespace that
//! tracks nothing; [`netif`] keeps the machine's own addresses, which decide the direction.

pub mod conntrack;
pub mod netif;
pub mod nft;
pub mod queue;
pub mod reader;
