//! ghostunnel's modules, as a library so that the fuzz targets in `fuzz/` can drive the parsers
//! directly. The binary (`src/main.rs`) is the only supported interface; nothing here is a
//! stable API.

#![deny(unsafe_code)]

#[cfg(feature = "acme")]
pub mod acme;
pub mod auth;
pub mod authz;
pub mod certs;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub mod duration;
pub mod identity;
#[cfg(feature = "jceks")]
pub mod jks;
pub mod lifecycle;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod net;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
#[cfg(feature = "pkcs12")]
pub mod pkcs12;
#[cfg(feature = "opa")]
pub mod policy;
pub mod pprof;
pub mod procinfo;
pub mod proxy;
pub mod relay;
pub mod reload;
pub mod report;
pub mod sandbox;
pub mod server;
pub mod signals;
pub mod status;
pub mod sync;
pub mod systemd;
pub mod tls;
pub mod tlsparity;
pub mod tunnel;
#[cfg(feature = "spiffe")]
pub mod workload;
