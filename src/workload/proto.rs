//! The three protobuf messages of the Workload API's `FetchX509SVID` call, decoded (and, for
//! test agents, encoded) by hand: `X509SVIDResponse { repeated X509SVID svids = 1; repeated
//! bytes crl = 2; map<string, bytes> federated_bundles = 3; }` and `X509SVID { string spiffe_id
//! = 1; bytes x509_svid = 2; bytes x509_svid_key = 3; bytes bundle = 4; string hint = 5; }`.
//! The request message is empty. Fields we do not know are skipped as the protobuf rules say,
//! so a newer agent that adds fields still decodes. Owns no I/O.

/// One X.509-SVID as the agent sent it: DER certificates (leaf first), a PKCS#8 key and the
/// DER CA certificates of its trust domain, all concatenated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct X509Svid {
    pub spiffe_id: String,
    pub x509_svid: Vec<u8>,
    pub x509_svid_key: Vec<u8>,
    pub bundle: Vec<u8>,
    pub hint: String,
}

/// One message of the stream: a complete new state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct X509SvidResponse {
    pub svids: Vec<X509Svid>,
    /// Trust domain (or `spiffe://` ID) → concatenated DER CA certificates, in wire order.
    pub federated_bundles: Vec<(String, Vec<u8>)>,
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// One field: its number and, for a length-delimited field, its bytes (`None` for the other
/// wire types, whose values are skipped).
struct Field<'a> {
    number: u64,
    bytes: Option<&'a [u8]>,
}

/// A protobuf reader over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("truncated field".into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field, `None` at the end of the message.
    fn field(&mut self) -> Result<Option<Field<'a>>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        if number == 0 {
            return Err("invalid field number 0".into());
        }
        let bytes = match wire {
            VARINT => {
                self.varint()?;
                None
            }
            FIXED64 => {
                self.take(8)?;
                None
            }
            FIXED32 => {
                self.take(4)?;
                None
            }
            LEN => {
                let n = usize::try_from(self.varint()?).map_err(|_| "field too long")?;
                Some(self.take(n)?)
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        Ok(Some(Field { number, bytes }))
    }
}

fn string(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
}

/// A known field number that arrived with a wire type other than length-delimited.
fn expect_len<'a>(field: Option<&'a [u8]>, name: &str) -> Result<&'a [u8], String> {
    field.ok_or_else(|| format!("field {name} has the wrong wire type"))
}

impl X509SvidResponse {
    /// Decodes one message. Errors name what was malformed.
    pub fn decode(buf: &[u8]) -> Result<X509SvidResponse, String> {
        let mut out = X509SvidResponse::default();
        let mut r = Reader { buf };
        while let Some(Field { number, bytes }) = r.field()? {
            match number {
                1 => out
                    .svids
                    .push(X509Svid::decode(expect_len(bytes, "svids")?)?),
                3 => out
                    .federated_bundles
                    .push(decode_map_entry(expect_len(bytes, "federated_bundles")?)?),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Encodes the message (what an agent sends).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for svid in &self.svids {
            put_len(&mut out, 1, &svid.encode());
        }
        for (key, value) in &self.federated_bundles {
            let mut entry = Vec::new();
            put_len(&mut entry, 1, key.as_bytes());
            put_len(&mut entry, 2, value);
            put_len(&mut out, 3, &entry);
        }
        out
    }
}

impl X509Svid {
    fn decode(buf: &[u8]) -> Result<X509Svid, String> {
        let mut out = X509Svid::default();
        let mut r = Reader { buf };
        while let Some(Field { number, bytes }) = r.field()? {
            match number {
                1 => out.spiffe_id = string(expect_len(bytes, "spiffe_id")?, "spiffe_id")?,
                2 => out.x509_svid = expect_len(bytes, "x509_svid")?.to_vec(),
                3 => out.x509_svid_key = expect_len(bytes, "x509_svid_key")?.to_vec(),
                4 => out.bundle = expect_len(bytes, "bundle")?.to_vec(),
                5 => out.hint = string(expect_len(bytes, "hint")?, "hint")?,
                _ => {}
            }
        }
        Ok(out)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (number, bytes) in [
            (1, self.spiffe_id.as_bytes()),
            (2, &self.x509_svid[..]),
            (3, &self.x509_svid_key[..]),
            (4, &self.bundle[..]),
            (5, self.hint.as_bytes()),
        ] {
            // proto3 leaves empty scalars off the wire.
            if !bytes.is_empty() {
                put_len(&mut out, number, bytes);
            }
        }
        out
    }
}

/// A `map<string, bytes>` entry: `{ string key = 1; bytes value = 2; }`.
fn decode_map_entry(buf: &[u8]) -> Result<(String, Vec<u8>), String> {
    let (mut key, mut value) = (String::new(), Vec::new());
    let mut r = Reader { buf };
    while let Some(Field { number, bytes }) = r.field()? {
        match number {
            1 => key = string(expect_len(bytes, "map key")?, "federated bundle key")?,
            2 => value = expect_len(bytes, "map value")?.to_vec(),
            _ => {}
        }
    }
    Ok((key, value))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    put_varint(out, number << 3 | u64::from(LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> X509SvidResponse {
        X509SvidResponse {
            svids: vec![
                X509Svid {
                    spiffe_id: "spiffe://example.org/a".into(),
                    x509_svid: vec![0x30; 300],
                    x509_svid_key: vec![1, 2, 3],
                    bundle: vec![4; 200],
                    hint: "internal".into(),
                },
                X509Svid {
                    spiffe_id: "spiffe://example.org/b".into(),
                    ..Default::default()
                },
            ],
            federated_bundles: vec![("other.org".into(), vec![9; 5])],
        }
    }

    #[test]
    fn round_trip() {
        let msg = sample();
        assert_eq!(X509SvidResponse::decode(&msg.encode()).unwrap(), msg);
    }

    /// The canonical protobuf encoding (field order, proto3 rules) of a message with one SVID
    /// `{spiffe_id: "spiffe://a/b", x509_svid: 01 02, bundle: 03}`, one CRL `05` and the
    /// federated bundle `{"td": 07}`.
    #[test]
    fn decodes_canonical_bytes_and_skips_crl() {
        let wire = [
            0x0a, 0x15, // svids, 21 bytes
            0x0a, 0x0c, b's', b'p', b'i', b'f', b'f', b'e', b':', b'/', b'/', b'a', b'/', b'b',
            0x12, 0x02, 0x01, 0x02, // x509_svid
            0x22, 0x01, 0x03, // bundle
            0x12, 0x01, 0x05, // crl
            0x1a, 0x07, 0x0a, 0x02, b't', b'd', 0x12, 0x01, 0x07, // federated_bundles entry
        ];
        let msg = X509SvidResponse::decode(&wire).unwrap();
        assert_eq!(msg.svids.len(), 1);
        assert_eq!(msg.svids[0].spiffe_id, "spiffe://a/b");
        assert_eq!(msg.svids[0].x509_svid, [1, 2]);
        assert_eq!(msg.svids[0].bundle, [3]);
        assert_eq!(msg.federated_bundles, [("td".to_string(), vec![7])]);
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped() {
        let mut wire = sample().encode();
        wire.extend_from_slice(&[0x38, 0x96, 0x01]); // field 7, varint 150
        wire.extend_from_slice(&[0x41, 0, 0, 0, 0, 0, 0, 0, 0]); // field 8, fixed64
        wire.extend_from_slice(&[0x4d, 0, 0, 0, 0]); // field 9, fixed32
        wire.extend_from_slice(&[0x52, 0x01, 0x00]); // field 10, bytes
        assert_eq!(X509SvidResponse::decode(&wire).unwrap(), sample());
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let good = sample().encode();
        // Every truncation of a valid message either decodes (cut at a field boundary) or
        // fails cleanly.
        for n in 0..good.len() {
            let _ = X509SvidResponse::decode(&good[..n]);
        }
        assert!(X509SvidResponse::decode(&[0x0a, 0x05, 0x00]).is_err());
        assert!(X509SvidResponse::decode(&[0x0b]).is_err()); // wire type 3 (groups)
        assert!(X509SvidResponse::decode(&[0x08, 0x01]).is_err()); // svids as a varint
        assert!(X509SvidResponse::decode(&[0xff; 11]).is_err());
        assert!(
            X509SvidResponse::decode(&[0x0a, 0x03, 0x0a, 0x01, 0xff])
                .unwrap_err()
                .contains("UTF-8")
        );
    }
}
