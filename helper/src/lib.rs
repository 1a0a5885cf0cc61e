//! conntrack-tray-helper's library: the event model, the wire protocol, the configuration and
//! filter logic (shared with the applet), and the thin OS layers the helper binary wires up.
//!
//! The data path runs one way: `conntrack` (kernel events) → `direction` (which end is us) →
//! `filter` (cheap rules) → `attribution` (which process) → `filter` (process rules) →
//! `output` (JSON or text lines). `commands` reads the applet's stdin commands.

pub mod attribution;
pub mod commands;
pub mod config;
pub mod direction;
pub mod event;
pub mod filter;
pub mod flow;
pub mod legacy;
pub mod names;
pub mod output;
pub mod pipeline;
pub mod privileges;
pub mod realtime;
pub mod sanitize;
pub mod seccomp;
pub mod service;
pub mod source;

pub use config::Config;
pub use event::{Connection, Event, Process};
pub use flow::{Direction, Family, Flow, Proto, Tuple};
