//! Harness for the integration tests: a generated PKI, the real `ghostunnel` binary as a
//! child process, plaintext backends and rustls peers.
//!
//! Not every helper is used by every test module.
#![allow(dead_code)]

pub mod backend;
pub mod daemon;
pub mod http;
pub mod pki;
pub mod tls;

pub use backend::*;
pub use daemon::*;
pub use http::*;
pub use pki::*;
pub use tls::*;
