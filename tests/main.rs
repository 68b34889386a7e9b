//! End-to-end tests: real programs traced on loopback, every capture checked by tshark and by our
//! own reader. One binary, so the slow cases share one build.

mod support;

pub mod capture_basics;
mod cli;
mod config_input;
pub mod descriptors;
mod docs;
mod events;
pub mod exactness;
mod filter;
pub mod isolation;
mod startup;
mod stdio_syscall;
mod tcp_events;
mod tls;
mod tls_bio;
mod tls_gnutls;
mod tls_keys;
mod tracer;
mod wire;
