//! Integration tests: each test runs the real `ghostunnel` binary against real sockets.

mod util;

mod check;
mod client;
mod compat_flags;
mod docs;
mod harness;
mod keystores;
mod lifecycle;
mod logging;
mod metrics;
mod outbound_proxy;
mod pair;
#[cfg(feature = "opa")]
mod policy;
mod proxy_protocol;
mod sandbox;
mod scanner;
mod server;
mod status;
mod systemd;
mod validation;
