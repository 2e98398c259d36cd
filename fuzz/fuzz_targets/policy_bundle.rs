//! Bundle loading from arbitrary bytes: the gzip and tar readers, the manifest, data files and
//! the Rego parser must return an error (never panic, hang or exhaust memory) on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ghostunnel::policy::load_archive_bytes(data);
});
