//! A URI SAN as the reference's URL object (11 keys), parsed with the rules of Go's generic
//! URL parser: lowercased scheme, opaque part, hidden user info, host as written,
//! percent-decoded path and fragment with their raw forms kept only when re-encoding would
//! differ, raw query, and the force-query and omit-host flags.

use super::input::Json;

#[derive(Default, Debug, PartialEq)]
struct Url {
    scheme: String,
    opaque: String,
    user: bool,
    host: String,
    path: String,
    raw_path: String,
    raw_query: String,
    fragment: String,
    raw_fragment: String,
    force_query: bool,
    omit_host: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Path,
    Fragment,
}

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decoding; `None` for a malformed escape or a result that is not UTF-8.
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = unhex(*b.get(i + 1)?)?;
            let lo = unhex(*b.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn should_escape(c: u8, mode: Mode) -> bool {
    if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') {
        return false;
    }
    match c {
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => match mode {
            Mode::Path => c == b'?',
            Mode::Fragment => false,
        },
        b'!' | b'(' | b')' | b'*' if mode == Mode::Fragment => false,
        _ => true,
    }
}

fn escape(s: &str, mode: Mode) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if should_escape(c, mode) {
            out.push_str(&format!("%{c:02X}"));
        } else {
            out.push(c as char);
        }
    }
    out
}

/// The scheme if `s` starts with one (letters, then letters, digits, `+`, `-`, `.`, then `:`).
fn split_scheme(s: &str) -> (&str, &str) {
    for (i, c) in s.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i > 0 => return (&s[..i], &s[i + 1..]),
            _ => return ("", s),
        }
    }
    ("", s)
}

fn parse(raw: &str) -> Url {
    let mut u = Url::default();
    let (rest, frag) = match raw.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (raw, None),
    };
    if let Some(f) = frag {
        match unescape(f) {
            Some(decoded) => {
                if escape(&decoded, Mode::Fragment) != f {
                    u.raw_fragment = f.to_string();
                }
                u.fragment = decoded;
            }
            None => u.fragment = f.to_string(),
        }
    }
    let (scheme, mut rest) = split_scheme(rest);
    u.scheme = scheme.to_ascii_lowercase();
    if rest.ends_with('?') && rest.matches('?').count() == 1 {
        u.force_query = true;
        rest = &rest[..rest.len() - 1];
    } else if let Some((r, q)) = rest.split_once('?') {
        u.raw_query = q.to_string();
        rest = r;
    }
    if !rest.starts_with('/') && !u.scheme.is_empty() {
        u.opaque = rest.to_string();
        return u;
    }
    if rest.starts_with("//") && (!u.scheme.is_empty() || !rest.starts_with("///")) {
        let after = &rest[2..];
        let (authority, path) = match after.find('/') {
            Some(i) => after.split_at(i),
            None => (after, ""),
        };
        match authority.rfind('@') {
            Some(i) => {
                u.user = true;
                u.host = authority[i + 1..].to_string();
            }
            None => u.host = authority.to_string(),
        }
        rest = path;
    } else if !u.scheme.is_empty() && rest.starts_with('/') {
        u.omit_host = true;
    }
    match unescape(rest) {
        Some(decoded) => {
            if escape(&decoded, Mode::Path) != rest {
                u.raw_path = rest.to_string();
            }
            u.path = decoded;
        }
        None => u.path = rest.to_string(),
    }
    u
}

/// The URL object for one URI SAN.
pub fn render(raw: &str) -> Json {
    let u = parse(raw);
    Json::Obj(vec![
        ("Scheme", Json::Str(u.scheme)),
        ("Opaque", Json::Str(u.opaque)),
        (
            "User",
            if u.user {
                Json::Obj(vec![])
            } else {
                Json::Null
            },
        ),
        ("Host", Json::Str(u.host)),
        ("Path", Json::Str(u.path)),
        ("RawPath", Json::Str(u.raw_path)),
        ("OmitHost", Json::Bool(u.omit_host)),
        ("ForceQuery", Json::Bool(u.force_query)),
        ("RawQuery", Json::Str(u.raw_query)),
        ("Fragment", Json::Str(u.fragment)),
        ("RawFragment", Json::Str(u.raw_fragment)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe() {
        assert_eq!(
            render("spiffe://example.com/ns/prod/sa/client").to_json(),
            r#"{"ForceQuery":false,"Fragment":"","Host":"example.com","OmitHost":false,"Opaque":"","Path":"/ns/prod/sa/client","RawFragment":"","RawPath":"","RawQuery":"","Scheme":"spiffe","User":null}"#
        );
    }

    #[test]
    fn full_url() {
        let u = parse("HTTPS://user@www.example.com:8443/a%20b/c?x=1&y=2#frag");
        assert_eq!(u.scheme, "https");
        assert_eq!(u.host, "www.example.com:8443");
        assert_eq!(u.path, "/a b/c");
        assert_eq!(u.raw_path, "");
        assert_eq!(u.raw_query, "x=1&y=2");
        assert_eq!(u.fragment, "frag");
        assert!(u.user);
    }

    #[test]
    fn raw_forms_opaque_and_flags() {
        let u = parse("https://h/a%2Fb#a%2Fb");
        assert_eq!((u.path.as_str(), u.raw_path.as_str()), ("/a/b", "/a%2Fb"));
        assert_eq!(
            (u.fragment.as_str(), u.raw_fragment.as_str()),
            ("a/b", "a%2Fb")
        );
        let u = parse("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6");
        assert_eq!(u.opaque, "uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6");
        assert_eq!(u.scheme, "urn");
        assert!(parse("file:/etc/x").omit_host);
        assert!(parse("https://h/p?").force_query);
        assert_eq!(parse("https://[::1]:8443/").host, "[::1]:8443");
    }
}
