//! The policy's `input` document: `{"certificate": <peer leaf>}`, the leaf rendered field for
//! field as the Go reference serializes its parsed X.509 certificate to JSON (53 keys, Go
//! field names, `null` for absent lists and pointers, integer enumerations, OIDs as integer
//! arrays or dotted strings, big integers as exact numbers). Policies written against the
//! reference read the same values here.
//!
//! The builder never fails on a certificate that passed verification: a field it cannot
//! decode is left at its absent value.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::der::{self, Reader, Tlv};
use super::url;

/// A JSON value as the reference presents it: numbers keep all their digits.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// Decimal digits, optionally with a leading `-`.
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn int(v: i64) -> Json {
        Json::Num(v.to_string())
    }

    fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    fn b64(bytes: &[u8]) -> Json {
        Json::Str(base64(bytes))
    }

    /// `null` for an empty list (Go's nil slice), else the array.
    fn list(items: Vec<Json>) -> Json {
        if items.is_empty() {
            Json::Null
        } else {
            Json::Arr(items)
        }
    }

    fn oid_ints(arcs: &[u64]) -> Json {
        Json::Arr(arcs.iter().map(|a| Json::Num(a.to_string())).collect())
    }

    /// Compact JSON with object keys sorted (as OPA re-serializes documents).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) => out.push_str(n),
            Json::Str(s) => write_string(out, s),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                let mut sorted: Vec<&(&str, Json)> = fields.iter().collect();
                sorted.sort_by_key(|(k, _)| *k);
                out.push('{');
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(out, k);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    /// The same document as the Rego engine's value.
    pub fn to_value(&self) -> regorus::Value {
        use std::collections::BTreeMap;
        match self {
            Json::Null => regorus::Value::Null,
            Json::Bool(b) => regorus::Value::from(*b),
            Json::Num(n) => regorus::Value::from_numeric_string(n).unwrap_or(regorus::Value::Null),
            Json::Str(s) => regorus::Value::from(s.as_str()),
            Json::Arr(items) => {
                regorus::Value::from(items.iter().map(Json::to_value).collect::<Vec<_>>())
            }
            Json::Obj(fields) => {
                let map: BTreeMap<regorus::Value, regorus::Value> = fields
                    .iter()
                    .map(|(k, v)| (regorus::Value::from(*k), v.to_value()))
                    .collect();
                regorus::Value::from(map)
            }
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    use base64ct::{Base64, Encoding};
    Base64::encode_string(bytes)
}

/// `{"certificate": …}` for the peer's leaf certificate.
pub fn input_document(leaf_der: &[u8]) -> Json {
    Json::Obj(vec![("certificate", certificate(leaf_der))])
}

// Object identifiers (DER contents) the renderer recognises.
const OID_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
const OID_DSA: &[u64] = &[1, 2, 840, 10040, 4, 1];
const OID_EC: &[u64] = &[1, 2, 840, 10045, 2, 1];
const OID_ED25519: &[u64] = &[1, 3, 101, 112];
const OID_RSA_PSS: &[u64] = &[1, 2, 840, 113549, 1, 1, 10];
const OID_AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
const OID_OCSP: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1];
const OID_CA_ISSUERS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 2];

fn signature_algorithm(alg: &Tlv) -> i64 {
    let mut r = Reader::new(alg.body);
    let Some(arcs) = r.expect(der::OID).and_then(|o| der::oid_arcs(o.body)) else {
        return 0;
    };
    match arcs.as_slice() {
        [1, 2, 840, 113549, 1, 1, 2] => 1,
        [1, 2, 840, 113549, 1, 1, 4] => 2,
        [1, 2, 840, 113549, 1, 1, 5] | [1, 3, 14, 3, 2, 29] => 3,
        [1, 2, 840, 113549, 1, 1, 11] => 4,
        [1, 2, 840, 113549, 1, 1, 12] => 5,
        [1, 2, 840, 113549, 1, 1, 13] => 6,
        [1, 2, 840, 10040, 4, 3] => 7,
        [2, 16, 840, 1, 101, 3, 4, 3, 2] => 8,
        [1, 2, 840, 10045, 4, 1] => 9,
        [1, 2, 840, 10045, 4, 3, 2] => 10,
        [1, 2, 840, 10045, 4, 3, 3] => 11,
        [1, 2, 840, 10045, 4, 3, 4] => 12,
        a if a == OID_RSA_PSS => pss_hash(&mut r),
        a if a == OID_ED25519 => 16,
        [2, 16, 840, 1, 101, 3, 4, 3, 17] => 17,
        [2, 16, 840, 1, 101, 3, 4, 3, 18] => 18,
        [2, 16, 840, 1, 101, 3, 4, 3, 19] => 19,
        _ => 0,
    }
}

/// RSASSA-PSS: the algorithm follows the hash named in the parameters.
fn pss_hash(r: &mut Reader) -> i64 {
    let hash = r
        .expect(der::SEQUENCE)
        .and_then(|params| Reader::new(params.body).next_if(0xa0))
        .and_then(|h| Reader::new(h.body).expect(der::SEQUENCE))
        .and_then(|alg| Reader::new(alg.body).expect(der::OID))
        .and_then(|o| der::oid_arcs(o.body));
    match hash.as_deref() {
        Some([2, 16, 840, 1, 101, 3, 4, 2, 1]) => 13,
        Some([2, 16, 840, 1, 101, 3, 4, 2, 2]) => 14,
        Some([2, 16, 840, 1, 101, 3, 4, 2, 3]) => 15,
        _ => 0,
    }
}

/// `(PublicKeyAlgorithm, PublicKey)` from the SubjectPublicKeyInfo contents.
fn public_key(spki: &[u8]) -> (i64, Json) {
    let mut r = Reader::new(spki);
    let (Some(alg), Some(bits)) = (r.expect(der::SEQUENCE), r.expect(der::BIT_STRING)) else {
        return (0, Json::Null);
    };
    let mut ar = Reader::new(alg.body);
    let Some(arcs) = ar.expect(der::OID).and_then(|o| der::oid_arcs(o.body)) else {
        return (0, Json::Null);
    };
    let key = bits.body.get(1..).unwrap_or_default();
    let num =
        |t: Option<Tlv>| Json::Num(t.map_or_else(|| "0".into(), |t| der::signed_decimal(t.body)));
    match arcs.as_slice() {
        a if a == OID_RSA => {
            let mut k = Reader::new(key);
            let mut seq = k.expect(der::SEQUENCE).map(|s| Reader::new(s.body));
            let n = seq.as_mut().and_then(|s| s.expect(der::INTEGER));
            let e = seq.as_mut().and_then(|s| s.expect(der::INTEGER));
            (1, Json::Obj(vec![("N", num(n)), ("E", num(e))]))
        }
        a if a == OID_DSA => {
            let mut params = ar.expect(der::SEQUENCE).map(|s| Reader::new(s.body));
            let mut next = || params.as_mut().and_then(|s| s.expect(der::INTEGER));
            let (p, q, g) = (next(), next(), next());
            let y = Reader::new(key).expect(der::INTEGER);
            (
                2,
                Json::Obj(vec![
                    ("P", num(p)),
                    ("Q", num(q)),
                    ("G", num(g)),
                    ("Y", num(y)),
                ]),
            )
        }
        a if a == OID_EC => {
            // Uncompressed point 04 || X || Y; the curve itself is not rendered.
            let (x, y) = match key.split_first() {
                Some((4, xy)) if xy.len() % 2 == 0 => xy.split_at(xy.len() / 2),
                _ => (&[][..], &[][..]),
            };
            (
                3,
                Json::Obj(vec![
                    ("Curve", Json::Obj(vec![])),
                    ("X", Json::Num(der::unsigned_decimal(x))),
                    ("Y", Json::Num(der::unsigned_decimal(y))),
                ]),
            )
        }
        a if a == OID_ED25519 => (4, Json::b64(key)),
        [2, 16, 840, 1, 101, 3, 4, 3, 17..=19] => (5, Json::Obj(vec![])),
        _ => (0, Json::Null),
    }
}

/// An attribute value as the reference decodes it (every string type it accepts).
fn attribute_string(tlv: &Tlv) -> String {
    match tlv.tag {
        // BMPString: UTF-16 big-endian.
        0x1e => {
            let units: Vec<u16> = tlv
                .body
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        // UniversalString: UTF-32 big-endian.
        0x1c => tlv
            .body
            .chunks(4)
            .filter(|c| c.len() == 4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .map(|u| char::from_u32(u).unwrap_or('\u{fffd}'))
            .collect(),
        _ => String::from_utf8_lossy(tlv.body).into_owned(),
    }
}

/// A Name object (11 keys) from the Name's DER contents.
fn name(body: &[u8]) -> Json {
    let mut names = Vec::new();
    let mut lists: [(u64, &'static str, Vec<Json>); 7] = [
        (6, "Country", vec![]),
        (10, "Organization", vec![]),
        (11, "OrganizationalUnit", vec![]),
        (7, "Locality", vec![]),
        (8, "Province", vec![]),
        (9, "StreetAddress", vec![]),
        (17, "PostalCode", vec![]),
    ];
    let mut serial = String::new();
    let mut common_name = String::new();
    for rdn in Reader::new(body).filter(|t| t.tag == der::SET) {
        for atv in Reader::new(rdn.body).filter(|t| t.tag == der::SEQUENCE) {
            let mut r = Reader::new(atv.body);
            let (Some(oid), Some(value)) = (r.expect(der::OID), r.next_any()) else {
                continue;
            };
            let arcs = der::oid_arcs(oid.body).unwrap_or_default();
            let value = attribute_string(&value);
            names.push(Json::Obj(vec![
                ("Type", Json::oid_ints(&arcs)),
                ("Value", Json::str(value.clone())),
            ]));
            if let [2, 5, 4, last] = arcs.as_slice() {
                match last {
                    3 => common_name = value,
                    5 => serial = value,
                    _ => {
                        if let Some(list) = lists.iter_mut().find(|(n, _, _)| n == last) {
                            list.2.push(Json::Str(value));
                        }
                    }
                }
            }
        }
    }
    let mut fields: Vec<(&'static str, Json)> = lists
        .into_iter()
        .map(|(_, key, values)| (key, Json::list(values)))
        .collect();
    fields.push(("SerialNumber", Json::Str(serial)));
    fields.push(("CommonName", Json::Str(common_name)));
    fields.push(("Names", Json::list(names)));
    fields.push(("ExtraNames", Json::Null));
    Json::Obj(fields)
}

/// An X.509 time as RFC 3339 UTC.
fn time(tlv: Option<Tlv>) -> Json {
    let Some(tlv) = tlv else {
        return Json::str("0001-01-01T00:00:00Z");
    };
    let s = String::from_utf8_lossy(tlv.body);
    let s = s.trim_end_matches('Z');
    let digits = |from: usize, len: usize| -> i64 {
        s.get(from..from + len)
            .and_then(|d| d.parse().ok())
            .unwrap_or(0)
    };
    let (year, rest) = match tlv.tag {
        0x17 => {
            let yy = digits(0, 2);
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        _ => (digits(0, 4), 4),
    };
    Json::Str(format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        digits(rest, 2),
        digits(rest + 2, 2),
        digits(rest + 4, 2),
        digits(rest + 6, 2),
        digits(rest + 8, 2)
    ))
}

fn ip_string(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let arr: [u8; 16] = bytes.try_into().ok()?;
            let v6 = Ipv6Addr::from(arr);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some(ip.to_string())
}

/// Everything decoded from the extensions, with the reference's absent values.
#[derive(Default)]
struct Ext {
    list: Vec<Json>,
    unhandled_critical: Vec<Json>,
    key_usage: i64,
    ext_key_usage: Vec<Json>,
    unknown_eku: Vec<Json>,
    basic_valid: bool,
    is_ca: bool,
    max_path_len: i64,
    max_path_len_zero: bool,
    ski: Option<Vec<u8>>,
    aki: Option<Vec<u8>>,
    ocsp: Vec<Json>,
    issuing_url: Vec<Json>,
    dns: Vec<Json>,
    email: Vec<Json>,
    ips: Vec<Json>,
    uris: Vec<Json>,
    nc_critical: bool,
    permitted_dns: Vec<Json>,
    excluded_dns: Vec<Json>,
    permitted_ip: Vec<Json>,
    excluded_ip: Vec<Json>,
    permitted_email: Vec<Json>,
    excluded_email: Vec<Json>,
    permitted_uri: Vec<Json>,
    excluded_uri: Vec<Json>,
    crl: Vec<Json>,
    policy_ids: Vec<Json>,
    policies: Vec<Json>,
    inhibit_any: i64,
    inhibit_any_zero: bool,
    inhibit_mapping: i64,
    inhibit_mapping_zero: bool,
    require_explicit: i64,
    require_explicit_zero: bool,
    mappings: Vec<Json>,
}

fn eku_code(arcs: &[u64]) -> Option<i64> {
    Some(match arcs {
        [2, 5, 29, 37, 0] => 0,
        [1, 3, 6, 1, 5, 5, 7, 3, n @ 1..=9] => *n as i64,
        [1, 3, 6, 1, 4, 1, 311, 10, 3, 3] => 10,
        [2, 16, 840, 1, 113730, 4, 1] => 11,
        [1, 3, 6, 1, 4, 1, 311, 2, 1, 22] => 12,
        [1, 3, 6, 1, 4, 1, 311, 61, 1, 1] => 13,
        _ => return None,
    })
}

impl Ext {
    /// Decodes one extension; returns whether the reference handles it.
    fn decode(&mut self, arcs: &[u64], critical: bool, value: &[u8]) -> bool {
        let mut r = Reader::new(value);
        match arcs {
            [2, 5, 29, 15] => {
                if let Some(bits) = r.expect(der::BIT_STRING) {
                    let data = bits.body.get(1..).unwrap_or_default();
                    for i in 0..9 {
                        let byte = data.get(i / 8).copied().unwrap_or(0);
                        if byte >> (7 - i % 8) & 1 == 1 {
                            self.key_usage |= 1 << i;
                        }
                    }
                }
                true
            }
            [2, 5, 29, 37] => {
                if let Some(seq) = r.expect(der::SEQUENCE) {
                    for oid in Reader::new(seq.body).filter(|t| t.tag == der::OID) {
                        let arcs = der::oid_arcs(oid.body).unwrap_or_default();
                        match eku_code(&arcs) {
                            Some(code) => self.ext_key_usage.push(Json::int(code)),
                            None => self.unknown_eku.push(Json::oid_ints(&arcs)),
                        }
                    }
                }
                true
            }
            [2, 5, 29, 19] => {
                if let Some(seq) = r.expect(der::SEQUENCE) {
                    let mut s = Reader::new(seq.body);
                    self.basic_valid = true;
                    self.is_ca = s
                        .next_if(der::BOOLEAN)
                        .is_some_and(|b| b.body.first().is_some_and(|&v| v != 0));
                    self.max_path_len = s
                        .next_if(der::INTEGER)
                        .and_then(|i| der::small_int(i.body))
                        .unwrap_or(-1);
                    self.max_path_len_zero = self.max_path_len == 0;
                }
                true
            }
            [2, 5, 29, 14] => {
                self.ski = r.expect(der::OCTET_STRING).map(|o| o.body.to_vec());
                true
            }
            [2, 5, 29, 35] => {
                self.aki = r
                    .expect(der::SEQUENCE)
                    .and_then(|s| Reader::new(s.body).next_if(0x80))
                    .map(|k| k.body.to_vec());
                true
            }
            [2, 5, 29, 17] => {
                if let Some(seq) = r.expect(der::SEQUENCE) {
                    for gn in Reader::new(seq.body) {
                        let text = || String::from_utf8_lossy(gn.body).into_owned();
                        match gn.tag {
                            0x81 => self.email.push(Json::Str(text())),
                            0x82 => self.dns.push(Json::Str(text())),
                            0x86 => self.uris.push(url::render(&text())),
                            0x87 => {
                                if let Some(ip) = ip_string(gn.body) {
                                    self.ips.push(Json::Str(ip));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                // Parsed to nothing: the reference leaves it to the critical check.
                !(self.dns.is_empty()
                    && self.email.is_empty()
                    && self.ips.is_empty()
                    && self.uris.is_empty())
            }
            [2, 5, 29, 30] => {
                self.nc_critical = critical;
                let mut handled = true;
                if let Some(seq) = r.expect(der::SEQUENCE) {
                    for subtrees in Reader::new(seq.body) {
                        let permitted = match subtrees.tag {
                            0xa0 => true,
                            0xa1 => false,
                            _ => continue,
                        };
                        for sub in Reader::new(subtrees.body).filter(|t| t.tag == der::SEQUENCE) {
                            let Some(base) = Reader::new(sub.body).next_any() else {
                                continue;
                            };
                            let text = Json::Str(String::from_utf8_lossy(base.body).into_owned());
                            let target = match (base.tag, permitted) {
                                (0x82, true) => &mut self.permitted_dns,
                                (0x82, false) => &mut self.excluded_dns,
                                (0x81, true) => &mut self.permitted_email,
                                (0x81, false) => &mut self.excluded_email,
                                (0x86, true) => &mut self.permitted_uri,
                                (0x86, false) => &mut self.excluded_uri,
                                (0x87, _) => {
                                    let half = base.body.len() / 2;
                                    let (ip, mask) = base.body.split_at(half);
                                    if let Some(ip) =
                                        ip_string(ip).filter(|_| half == 4 || half == 16)
                                    {
                                        let range = Json::Obj(vec![
                                            ("IP", Json::Str(ip)),
                                            ("Mask", Json::b64(mask)),
                                        ]);
                                        if permitted {
                                            self.permitted_ip.push(range);
                                        } else {
                                            self.excluded_ip.push(range);
                                        }
                                    }
                                    continue;
                                }
                                _ => {
                                    handled = false;
                                    continue;
                                }
                            };
                            target.push(text);
                        }
                    }
                }
                handled
            }
            [2, 5, 29, 31] => {
                if let Some(seq) = r.expect(der::SEQUENCE) {
                    for dp in Reader::new(seq.body).filter(|t| t.tag == der::SEQUENCE) {
                        let full = Reader::new(dp.body)
                            .next_if(0xa0)
                            .and_then(|n| Reader::new(n.body).next_if(0xa0));
                        for gn in full.map(|f| Reader::new(f.body)).into_iter().flatten() {
                            if gn.tag == 0x86 {
                                self.crl
                                    .push(Json::Str(String::from_utf8_lossy(gn.body).into_owned()));
                            }
                        }
                    }
                }
                true
            }
            [2, 5, 29, 32] => {
                if let Some(seq) = r.expect(der::SEQUENCE) {
                    for info in Reader::new(seq.body).filter(|t| t.tag == der::SEQUENCE) {
                        let Some(oid) = Reader::new(info.body).expect(der::OID) else {
                            continue;
                        };
                        self.policies.push(Json::Str(der::oid_dotted(oid.body)));
                        if let Some(arcs) = der::oid_arcs(oid.body) {
                            if arcs.iter().all(|&a| a <= i64::MAX as u64) {
                                self.policy_ids.push(Json::oid_ints(&arcs));
                            }
                        }
                    }
                }
                true
            }
            [2, 5, 29, 33] => {
                if let Some(seq) = r.expect(der::SEQUENCE) {
                    for m in Reader::new(seq.body).filter(|t| t.tag == der::SEQUENCE) {
                        let mut mr = Reader::new(m.body);
                        if let (Some(a), Some(b)) = (mr.expect(der::OID), mr.expect(der::OID)) {
                            self.mappings.push(Json::Obj(vec![
                                ("IssuerDomainPolicy", Json::Str(der::oid_dotted(a.body))),
                                ("SubjectDomainPolicy", Json::Str(der::oid_dotted(b.body))),
                            ]));
                        }
                    }
                }
                true
            }
            [2, 5, 29, 36] => {
                if let Some(seq) = r.expect(der::SEQUENCE) {
                    for c in Reader::new(seq.body) {
                        let v = der::small_int(c.body).unwrap_or(0);
                        match c.tag {
                            0x80 => {
                                self.require_explicit = v;
                                self.require_explicit_zero = v == 0;
                            }
                            0x81 => {
                                self.inhibit_mapping = v;
                                self.inhibit_mapping_zero = v == 0;
                            }
                            _ => {}
                        }
                    }
                }
                true
            }
            [2, 5, 29, 54] => {
                if let Some(i) = r.expect(der::INTEGER) {
                    self.inhibit_any = der::small_int(i.body).unwrap_or(0);
                    self.inhibit_any_zero = self.inhibit_any == 0;
                }
                true
            }
            a if a == OID_AIA => {
                if let Some(seq) = r.expect(der::SEQUENCE) {
                    for ad in Reader::new(seq.body).filter(|t| t.tag == der::SEQUENCE) {
                        let mut ar = Reader::new(ad.body);
                        let method = ar.expect(der::OID).and_then(|o| der::oid_arcs(o.body));
                        let Some(loc) = ar.next_if(0x86) else {
                            continue;
                        };
                        let uri = Json::Str(String::from_utf8_lossy(loc.body).into_owned());
                        match method.as_deref() {
                            Some(m) if m == OID_OCSP => self.ocsp.push(uri),
                            Some(m) if m == OID_CA_ISSUERS => self.issuing_url.push(uri),
                            _ => {}
                        }
                    }
                }
                true
            }
            _ => false,
        }
    }
}

/// The 53-key certificate object; a structure it cannot walk yields absent values.
pub fn certificate(der_bytes: &[u8]) -> Json {
    let empty = Tlv {
        tag: 0,
        body: &[],
        raw: &[],
    };
    let mut outer = Reader::new(der_bytes);
    let cert = outer.expect(der::SEQUENCE).unwrap_or(empty);
    let mut c = Reader::new(cert.body);
    let tbs = c.expect(der::SEQUENCE).unwrap_or(empty);
    let outer_alg = c.expect(der::SEQUENCE).unwrap_or(empty);
    let signature = c
        .expect(der::BIT_STRING)
        .map_or(&[][..], |b| b.body.get(1..).unwrap_or_default());

    let mut t = Reader::new(tbs.body);
    let version = t
        .next_if(0xa0)
        .and_then(|v| Reader::new(v.body).expect(der::INTEGER))
        .and_then(|i| der::small_int(i.body))
        .unwrap_or(0)
        + 1;
    let serial = t.expect(der::INTEGER).unwrap_or(empty);
    let _inner_alg = t.expect(der::SEQUENCE);
    let issuer = t.expect(der::SEQUENCE).unwrap_or(empty);
    let validity = t.expect(der::SEQUENCE).unwrap_or(empty);
    let subject = t.expect(der::SEQUENCE).unwrap_or(empty);
    let spki = t.expect(der::SEQUENCE).unwrap_or(empty);
    let mut ext = Ext::default();
    while let Some(field) = t.next_any() {
        if field.tag != 0xa3 {
            continue;
        }
        let Some(list) = Reader::new(field.body).expect(der::SEQUENCE) else {
            continue;
        };
        for e in Reader::new(list.body).filter(|e| e.tag == der::SEQUENCE) {
            let mut er = Reader::new(e.body);
            let Some(oid) = er.expect(der::OID) else {
                continue;
            };
            let critical = er
                .next_if(der::BOOLEAN)
                .is_some_and(|b| b.body.first().is_some_and(|&v| v != 0));
            let value = er.expect(der::OCTET_STRING).map_or(&[][..], |v| v.body);
            let arcs = der::oid_arcs(oid.body).unwrap_or_default();
            ext.list.push(Json::Obj(vec![
                ("Id", Json::oid_ints(&arcs)),
                ("Critical", Json::Bool(critical)),
                ("Value", Json::b64(value)),
            ]));
            let handled = ext.decode(&arcs, critical, value);
            if critical && !handled {
                ext.unhandled_critical.push(Json::oid_ints(&arcs));
            }
        }
    }
    let mut v = Reader::new(validity.body);
    let not_before = time(v.next_any());
    let not_after = time(v.next_any());
    let (pk_alg, pk) = public_key(spki.body);
    let opt_b64 = |b: Option<Vec<u8>>| b.map_or(Json::Null, |b| Json::b64(&b));

    Json::Obj(vec![
        ("Raw", Json::b64(cert.raw)),
        ("RawTBSCertificate", Json::b64(tbs.raw)),
        ("RawSubjectPublicKeyInfo", Json::b64(spki.raw)),
        ("RawSubject", Json::b64(subject.raw)),
        ("RawIssuer", Json::b64(issuer.raw)),
        ("RawSignatureAlgorithm", Json::b64(outer_alg.raw)),
        ("Signature", Json::b64(signature)),
        (
            "SignatureAlgorithm",
            Json::int(signature_algorithm(&outer_alg)),
        ),
        ("PublicKeyAlgorithm", Json::int(pk_alg)),
        ("PublicKey", pk),
        ("Version", Json::int(version)),
        ("SerialNumber", Json::Num(der::signed_decimal(serial.body))),
        ("Issuer", name(issuer.body)),
        ("Subject", name(subject.body)),
        ("NotBefore", not_before),
        ("NotAfter", not_after),
        ("KeyUsage", Json::int(ext.key_usage)),
        ("Extensions", Json::list(ext.list)),
        ("ExtraExtensions", Json::Null),
        (
            "UnhandledCriticalExtensions",
            Json::list(ext.unhandled_critical),
        ),
        ("ExtKeyUsage", Json::list(ext.ext_key_usage)),
        ("UnknownExtKeyUsage", Json::list(ext.unknown_eku)),
        ("BasicConstraintsValid", Json::Bool(ext.basic_valid)),
        ("IsCA", Json::Bool(ext.is_ca)),
        ("MaxPathLen", Json::int(ext.max_path_len)),
        ("MaxPathLenZero", Json::Bool(ext.max_path_len_zero)),
        ("SubjectKeyId", opt_b64(ext.ski)),
        ("AuthorityKeyId", opt_b64(ext.aki)),
        ("OCSPServer", Json::list(ext.ocsp)),
        ("IssuingCertificateURL", Json::list(ext.issuing_url)),
        ("DNSNames", Json::list(ext.dns)),
        ("EmailAddresses", Json::list(ext.email)),
        ("IPAddresses", Json::list(ext.ips)),
        ("URIs", Json::list(ext.uris)),
        ("PermittedDNSDomainsCritical", Json::Bool(ext.nc_critical)),
        ("PermittedDNSDomains", Json::list(ext.permitted_dns)),
        ("ExcludedDNSDomains", Json::list(ext.excluded_dns)),
        ("PermittedIPRanges", Json::list(ext.permitted_ip)),
        ("ExcludedIPRanges", Json::list(ext.excluded_ip)),
        ("PermittedEmailAddresses", Json::list(ext.permitted_email)),
        ("ExcludedEmailAddresses", Json::list(ext.excluded_email)),
        ("PermittedURIDomains", Json::list(ext.permitted_uri)),
        ("ExcludedURIDomains", Json::list(ext.excluded_uri)),
        ("CRLDistributionPoints", Json::list(ext.crl)),
        ("PolicyIdentifiers", Json::list(ext.policy_ids)),
        ("Policies", Json::list(ext.policies)),
        ("InhibitAnyPolicy", Json::int(ext.inhibit_any)),
        ("InhibitAnyPolicyZero", Json::Bool(ext.inhibit_any_zero)),
        ("InhibitPolicyMapping", Json::int(ext.inhibit_mapping)),
        (
            "InhibitPolicyMappingZero",
            Json::Bool(ext.inhibit_mapping_zero),
        ),
        ("RequireExplicitPolicy", Json::int(ext.require_explicit)),
        (
            "RequireExplicitPolicyZero",
            Json::Bool(ext.require_explicit_zero),
        ),
        ("PolicyMappings", Json::list(ext.mappings)),
    ])
}
