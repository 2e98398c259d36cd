//! ghostunnel: a TLS proxy with mutual authentication.

mod auth;
mod certs;
mod cli;
mod config;
mod logging;
mod net;

fn main() {}
