//! Integration tests: each test runs the real `ghostunnel` binary against real sockets.

mod util;

mod harness;
