//! Names for remote addresses: what the machine looked up before it connected.
//!
//! [`dns`] parses DNS answers and keeps the address → name map; [`capture`] is the packet
//! socket that sees the answers the machine receives; [`reverse`] asks PTR questions on a
//! worker thread, when the configuration wants it.

pub mod capture;
pub mod dns;
pub mod reverse;
