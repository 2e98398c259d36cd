//! Authorization of the peer's leaf certificate: the `--allow-*`/`--verify-*` ACL (SPEC 5.1,
//! 5.2), SPKI pins (5.3) and URI wildcard patterns (5.4). Pure functions over DER bytes; owns
//! no TLS state and no I/O.

use crate::config::Acl;

/// The rejection text for a failed ACL check (SPEC 5.1).
pub const UNAUTHORIZED: &str = "unauthorized: invalid principal, or principal not allowed";

/// One `<algo>:<base64>` SPKI pin.
#[derive(Debug, Clone)]
pub struct SpkiPin {
    algo: PinAlgo,
    digest: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PinAlgo {
    Sha256,
    Sha384,
    Sha512,
}

impl SpkiPin {
    /// Parses a pin; errors read `invalid pin "<s>": …` (the caller adds the flag prefix).
    pub fn parse(s: &str) -> Result<SpkiPin, String> {
        let _ = (s, PinAlgo::Sha256, PinAlgo::Sha384, PinAlgo::Sha512);
        unimplemented!()
    }
}

/// Checks the leaf against the pins: `Ok` if any matches, else the SPEC 5.3 runtime text
/// (`unauthorized: pin verification failed`, `unauthorized: failed to parse certificate: …`).
pub fn check_pins(pins: &[SpkiPin], leaf_der: &[u8]) -> Result<(), String> {
    let _ = (pins, leaf_der);
    unimplemented!()
}

/// A compiled `--allow-uri`/`--verify-uri` pattern.
#[derive(Debug, Clone)]
pub struct UriPattern {
    source: String,
}

impl UriPattern {
    /// Compiles a pattern; errors are the SPEC 5.4 texts (e.g. `input pattern was empty string`).
    pub fn compile(s: &str) -> Result<UriPattern, String> {
        Ok(UriPattern { source: s.to_string() })
    }

    /// Whether the whole input matches.
    pub fn matches(&self, input: &str) -> bool {
        let _ = input;
        unimplemented!()
    }
}

/// Applies the ACL to a verified leaf: CN, OU, DNS SAN, IP SAN, URI SAN in that order; the first
/// match accepts. `Err(UNAUTHORIZED)` when nothing matches (an empty ACL rejects everything).
pub fn check_acl(acl: &Acl, leaf_der: &[u8]) -> Result<(), String> {
    let _ = (acl, leaf_der);
    unimplemented!()
}
