//! An X509SVIDResponse from the Workload API agent: protobuf decoding, then the SVID and
//! bundle checks. Garbage from the agent must be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

use ghostunnel::workload::{proto, svid};

fuzz_target!(|data: &[u8]| {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Ok(msg) = proto::X509SvidResponse::decode(data) {
        let _ = svid::parse_response(&msg, &provider);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = svid::SpiffeId::parse(text);
        let _ = ghostunnel::workload::parse_endpoint(text);
    }
});
