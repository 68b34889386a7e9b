//! The core of netintercept, between the interposed symbols (`hooks/`) and packet synthesis
//! (`synth/`): which descriptors are tracked sockets, each connection's state, the configuration,
//! and the capture output. Hooks report events here; nothing here knows which symbol called it.

pub mod cli;
pub mod collector;
pub mod config;
pub mod events;
pub mod fast_hash;
pub mod filter;
pub mod guard;
pub mod key_callbacks;
pub mod layout;
pub mod output_path;
pub mod process;
pub mod quoted;
pub mod real_fn;
pub mod record;
pub mod recorder;
pub mod ring;
pub mod sockaddr;
pub mod sys;
pub mod tls;
pub mod tracer;
