//! Integration tests: each test runs the real `ghostunnel` binary against real sockets.

mod util;

#[cfg(feature = "acme")]
mod acme;
mod check;
mod client;
mod compat_flags;
mod docs;
mod harness;
mod jceks;
mod keystores;
mod lifecycle;
mod logging;
mod metrics;
mod outbound_proxy;
mod pair;
mod parity;
mod pkcs11;
#[cfg(feature = "opa")]
mod policy;
mod proxy_protocol;
mod sandbox;
mod scanner;
mod server;
#[cfg(feature = "spiffe")]
mod spiffe;
mod status;
mod systemd;
mod validation;
