//! The keystore loaders (PEM, DER, PKCS#12): arbitrary bytes load or fail with an error.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    // The first byte picks the format by file name, as operators' extensions do.
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let name = ["ks.pem", "ks.p12", "ks.der", "ks"][usize::from(pick % 4)];
    for password in ["", "secret"] {
        let _ = ghostunnel::certs::identity_from_keystore_bytes(
            Path::new(name),
            rest.to_vec(),
            password,
            &provider,
        );
    }
    let _ = ghostunnel::certs::subject_string(rest);
    let _ = ghostunnel::auth::leaf_spki_der(rest);
});
