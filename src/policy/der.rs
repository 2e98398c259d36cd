//! A small DER walker for the fields the policy's `input` document exposes raw (TBS, subject,
//! SPKI, …) and for the extension contents it decodes. Single-byte tags and definite lengths
//! only, which is all DER certificates use; anything else ends the walk with `None`.

/// One element: its tag, its contents and the whole encoding (header included).
#[derive(Clone, Copy, Debug)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub body: &'a [u8],
    pub raw: &'a [u8],
}

pub const BOOLEAN: u8 = 0x01;
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const OID: u8 = 0x06;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;

/// Reads consecutive elements out of a byte slice.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next element, whatever its tag.
    pub fn next_any(&mut self) -> Option<Tlv<'a>> {
        let bytes = self.rest;
        let tag = *bytes.first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let first = *bytes.get(1)? as usize;
        let (len, header) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | *bytes.get(2 + i)? as usize;
            }
            (len, 2 + n)
        };
        let end = header.checked_add(len)?;
        if end > bytes.len() {
            return None;
        }
        self.rest = &bytes[end..];
        Some(Tlv {
            tag,
            body: &bytes[header..end],
            raw: &bytes[..end],
        })
    }

    /// The next element if it has `tag` (consumed), else `None` (nothing consumed).
    pub fn next_if(&mut self, tag: u8) -> Option<Tlv<'a>> {
        let mut probe = *self;
        let tlv = probe.next_any()?;
        if tlv.tag != tag {
            return None;
        }
        *self = probe;
        Some(tlv)
    }

    /// The next element, which must have `tag`.
    pub fn expect(&mut self, tag: u8) -> Option<Tlv<'a>> {
        let tlv = self.next_any()?;
        (tlv.tag == tag).then_some(tlv)
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Tlv<'a>;

    fn next(&mut self) -> Option<Tlv<'a>> {
        self.next_any()
    }
}

/// The arcs of an object identifier; `None` if malformed or an arc exceeds 64 bits.
pub fn oid_arcs(body: &[u8]) -> Option<Vec<u64>> {
    if body.is_empty() {
        return None;
    }
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    let mut in_arc = false;
    for &b in body {
        if !in_arc && b == 0x80 {
            return None;
        }
        value = value.checked_mul(128)?.checked_add(u64::from(b & 0x7f))?;
        in_arc = b & 0x80 != 0;
        if !in_arc {
            if arcs.is_empty() {
                let (first, second) = match value {
                    0..=39 => (0, value),
                    40..=79 => (1, value - 40),
                    _ => (2, value - 80),
                };
                arcs.push(first);
                arcs.push(second);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    if in_arc {
        return None;
    }
    Some(arcs)
}

/// Dotted form of an object identifier, arbitrary arc sizes included.
pub fn oid_dotted(body: &[u8]) -> String {
    if let Some(arcs) = oid_arcs(body) {
        return arcs
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".");
    }
    // Arcs beyond 64 bits: decode each one as a big number.
    let mut parts = Vec::new();
    let mut arc: Vec<u8> = Vec::new();
    let mut bits: Vec<bool> = Vec::new();
    for &b in body {
        for i in (0..7).rev() {
            bits.push(b >> i & 1 == 1);
        }
        if b & 0x80 == 0 {
            arc.clear();
            // Pack the 7-bit groups into bytes, most significant first.
            let pad = (8 - bits.len() % 8) % 8;
            let mut all = vec![false; pad];
            all.append(&mut bits);
            for chunk in all.chunks(8) {
                arc.push(chunk.iter().fold(0u8, |acc, &bit| acc << 1 | u8::from(bit)));
            }
            parts.push(unsigned_decimal(&arc));
        }
    }
    if let Some(first) = parts.first_mut() {
        // The first group holds 40 * X + Y; X is 2 from 80 on.
        *first = match first.parse::<u64>() {
            Ok(v @ 0..=39) => format!("0.{v}"),
            Ok(v @ 40..=79) => format!("1.{}", v - 40),
            _ => format!("2.{}", subtract_small(first, 80)),
        };
    }
    parts.join(".")
}

fn subtract_small(decimal: &str, n: u32) -> String {
    let mut digits: Vec<u32> = decimal.bytes().map(|d| u32::from(d - b'0')).collect();
    let mut borrow = n;
    for d in digits.iter_mut().rev() {
        let sub = borrow % 10;
        borrow /= 10;
        if *d < sub {
            *d += 10 - sub;
            borrow += 1;
        } else {
            *d -= sub;
        }
        if borrow == 0 {
            break;
        }
    }
    let s: String = digits.iter().map(|&d| char::from(b'0' + d as u8)).collect();
    let trimmed = s.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Decimal digits of an unsigned big-endian integer.
pub fn unsigned_decimal(bytes: &[u8]) -> String {
    let mut limbs: Vec<u32> = Vec::new();
    // Base 10^9 limbs, least significant first.
    for &b in bytes {
        let mut carry = u64::from(b);
        for limb in limbs.iter_mut() {
            let v = u64::from(*limb) * 256 + carry;
            *limb = (v % 1_000_000_000) as u32;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push((carry % 1_000_000_000) as u32);
            carry /= 1_000_000_000;
        }
    }
    match limbs.split_last() {
        None => "0".to_string(),
        Some((top, rest)) => {
            let mut s = top.to_string();
            for limb in rest.iter().rev() {
                s.push_str(&format!("{limb:09}"));
            }
            s
        }
    }
}

/// Decimal digits of a two's complement big-endian integer (an ASN.1 INTEGER's contents).
pub fn signed_decimal(bytes: &[u8]) -> String {
    match bytes.first() {
        Some(&b) if b & 0x80 != 0 => {
            // Negative: magnitude = two's complement negation.
            let mut mag: Vec<u8> = bytes.iter().map(|b| !b).collect();
            for byte in mag.iter_mut().rev() {
                let (v, overflow) = byte.overflowing_add(1);
                *byte = v;
                if !overflow {
                    break;
                }
            }
            format!("-{}", unsigned_decimal(&mag))
        }
        _ => unsigned_decimal(bytes),
    }
}

/// A small ASN.1 INTEGER as i64, `None` if it does not fit.
pub fn small_int(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    let mut v: i64 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
    for &b in bytes {
        v = (v << 8) | i64::from(b);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(unsigned_decimal(&[]), "0");
        assert_eq!(unsigned_decimal(&[0x12, 0x34]), "4660");
        assert_eq!(
            unsigned_decimal(&[0xff; 16]),
            "340282366920938463463374607431768211455"
        );
        assert_eq!(signed_decimal(&[0xff]), "-1");
        assert_eq!(signed_decimal(&[0x80, 0x00]), "-32768");
        assert_eq!(signed_decimal(&[0x00, 0x80]), "128");
        assert_eq!(small_int(&[0xff, 0xfe]), Some(-2));
    }

    #[test]
    fn oids() {
        assert_eq!(oid_arcs(&[0x55, 0x1d, 0x11]), Some(vec![2, 5, 29, 17]));
        assert_eq!(
            oid_dotted(&[0x2b, 0x06, 0x01, 0x04, 0x01, 0x86, 0x8d, 0x1f, 0x05, 0x01]),
            "1.3.6.1.4.1.99999.5.1"
        );
        // An arc of 2^70 does not fit 64 bits but still renders.
        let mut body = vec![0x2a];
        body.extend([
            0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
        ]);
        assert_eq!(oid_dotted(&body), "1.2.1180591620717411303424");
        assert_eq!(oid_arcs(&body), None);
    }
}
