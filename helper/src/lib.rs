//! conntrack-tray-helper's library: the event model, the wire protocol, the configuration and
//! filter logic (shared with the applet), and the thin OS layers the helper binary wires up.
//!
//! The data path runs one way, and the modules are listed in its order: [`source`] (kernel
//! events, parsed into [`flow`] values, read by the reader thread) → [`direction`] (which
//! end is us) → [`filter`] (cheap rules) → [`attribution`] (which process) → [`names`]
//! (which name that process looked up) → [`filter`] (process and host rules) → [`event`]
//! (what is reported) → [`sanitize`] and [`output`] (JSON or text lines). [`pipeline`] runs
//! one flow through the decisions, [`service`] is the main loop around it, [`commands`]
//! are the applet's stdin commands; [`privileges`] and [`seccomp`] confine the helper once
//! it is set up.

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
pub mod pickups;
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
