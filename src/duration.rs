//! Go-compatible durations and sizes: the `--*-timeout` grammar (docs/behaviour.md §2.2) and the
//! duration and byte formats of the connection log lines (docs/behaviour.md §13.3).

use std::time::Duration;

/// Parses a Go duration (`300s`, `1.5h`, `1h30m`, `-1s`, `0`) into signed nanoseconds, with
/// exactly the grammar and overflow rules of Go's `time.ParseDuration`:
/// `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, units `ns us µs μs ms s m h`, a bare `0` allowed.
/// Every error reads `time: invalid duration "<s>"` (docs/behaviour.md §2.2).
pub fn parse_go_duration(s: &str) -> Result<i128, String> {
    let err = || format!("time: invalid duration \"{s}\"");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = |r: &str| r.bytes().take_while(u8::is_ascii_digit).count();
        // [0-9]*
        let n = digits(rest);
        let mut whole: u64 = 0;
        for b in rest[..n].bytes() {
            whole = whole
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                .filter(|v| *v <= LIMIT)
                .ok_or_else(err)?;
        }
        let pre = n > 0;
        rest = &rest[n..];
        // (\.[0-9]*)?, digits past what fits are dropped, as in Go.
        let (mut frac, mut scale, mut post) = (0u64, 1f64, false);
        if let Some(r) = rest.strip_prefix('.') {
            let n = digits(r);
            post = n > 0;
            let mut overflow = false;
            for b in r[..n].bytes() {
                if overflow || frac > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let v = frac * 10 + u64::from(b - b'0');
                if v > LIMIT {
                    overflow = true;
                    continue;
                }
                frac = v;
                scale *= 10.0;
            }
            rest = &r[n..];
        }
        if !pre && !post {
            return Err(err());
        }
        // The unit runs to the next digit or '.'.
        let end = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: u64 = match &rest[..end] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(err()),
        };
        rest = &rest[end..];
        if whole > LIMIT / unit {
            return Err(err());
        }
        let mut v = whole * unit;
        if frac > 0 {
            // Go uses float64 here too; exact to the nanosecond for fractions of an hour.
            v += (frac as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(err());
            }
        }
        total = total
            .checked_add(v)
            .filter(|t| *t <= LIMIT)
            .ok_or_else(err)?;
    }
    if !neg && total > LIMIT - 1 {
        return Err(err());
    }
    let total = i128::from(total);
    Ok(if neg { -total } else { total })
}

/// Formats like Go's `time.Duration.String()`, rounded to milliseconds above 1 ms
/// (`3.001s`, `299ms`, `2m3.5s`, `1h0m0s`, `387.341µs`).
pub fn format_go_duration(d: Duration) -> String {
    let mut nanos = d.as_nanos();
    if nanos > 1_000_000 {
        nanos = (nanos + 500_000) / 1_000_000 * 1_000_000;
    }
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", frac(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", frac(nanos, 1_000_000));
    }
    let secs = nanos / 1_000_000_000;
    let sub = nanos % 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let s = frac(s * 1_000_000_000 + sub, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// `n / unit` with the remainder as trimmed decimals.
fn frac(n: u128, unit: u128) -> String {
    let whole = n / unit;
    let rest = n % unit;
    if rest == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Byte counts of the `closed pipe` line: `<n> bytes` below 1 KiB, else one decimal with a
/// binary unit (`1.2 KiB`, `1.5 MiB`).
pub fn format_bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} bytes");
    }
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024 * 1024 {
        value >>= 10;
        unit += 1;
    }
    format!("{:.1} {}", value as f64 / 1024.0, UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_grammar() {
        assert_eq!(parse_go_duration("300s"), Ok(300_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("-1s"), Ok(-1_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("10µs"), Ok(10_000));
        assert_eq!(parse_go_duration("10μs"), Ok(10_000));
        for bad in ["", "10", "1x", "s", ".s", "1..2s", "--1s"] {
            assert_eq!(
                parse_go_duration(bad),
                Err(format!("time: invalid duration \"{bad}\""))
            );
        }
    }

    #[test]
    fn go_duration_fractions_and_signs() {
        assert_eq!(parse_go_duration("+5s"), Ok(5_000_000_000));
        assert_eq!(parse_go_duration("-0"), Ok(0));
        assert_eq!(parse_go_duration("+0"), Ok(0));
        assert_eq!(parse_go_duration("0s"), Ok(0));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_go_duration("5.s"), Ok(5_000_000_000));
        assert_eq!(parse_go_duration("1.000000001s"), Ok(1_000_000_001));
        assert_eq!(parse_go_duration("100us"), Ok(100_000));
        assert_eq!(parse_go_duration("1ns"), Ok(1));
        assert_eq!(parse_go_duration("2m3.5s"), Ok(123_500_000_000));
        assert_eq!(parse_go_duration("1h1m1s1ms1us1ns"), Ok(3_661_001_001_001));
        assert_eq!(parse_go_duration("0.1h"), Ok(360_000_000_000));
        // Repeated and unordered units add up, as in Go.
        assert_eq!(parse_go_duration("1s1s"), Ok(2_000_000_000));
        assert_eq!(parse_go_duration("1s1h"), Ok(3_601_000_000_000));
        // Excess fraction digits are ignored rather than rejected.
        assert_eq!(
            parse_go_duration("1.00000000000000000000000000001s"),
            Ok(1_000_000_000)
        );
        for bad in [
            "-", "+", "0x", "00", "1S", "1 s", " 1s", "1s ", "1sec", "1e3s", "-+1s", "1.2.3s",
        ] {
            assert_eq!(
                parse_go_duration(bad),
                Err(format!("time: invalid duration \"{bad}\"")),
                "{bad}"
            );
        }
    }

    #[test]
    fn go_duration_limits() {
        let max = i128::from(i64::MAX);
        assert_eq!(parse_go_duration("9223372036854775807ns"), Ok(max));
        assert_eq!(parse_go_duration("-9223372036854775808ns"), Ok(-max - 1));
        assert_eq!(parse_go_duration("2562047h47m16.854775807s"), Ok(max));
        for bad in [
            "9223372036854775808ns",
            "2562048h",
            "99999999999999999999s",
            "9223372036854775807ns1ns",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn go_duration_output() {
        let ms = Duration::from_millis;
        assert_eq!(format_go_duration(ms(3001)), "3.001s");
        assert_eq!(format_go_duration(ms(299)), "299ms");
        assert_eq!(format_go_duration(ms(123_500)), "2m3.5s");
        assert_eq!(format_go_duration(ms(3_600_000)), "1h0m0s");
        assert_eq!(
            format_go_duration(Duration::from_nanos(387_341)),
            "387.341µs"
        );
        assert_eq!(format_go_duration(Duration::from_nanos(2_000_400)), "2ms");
        let ns = Duration::from_nanos;
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        assert_eq!(format_go_duration(ns(999)), "999ns");
        assert_eq!(format_go_duration(ns(1_000)), "1µs");
        assert_eq!(format_go_duration(ns(999_999)), "999.999µs");
        assert_eq!(format_go_duration(ns(1_000_000)), "1ms");
        assert_eq!(format_go_duration(ns(1_499_999)), "1ms");
        assert_eq!(format_go_duration(ns(1_500_000)), "2ms");
        assert_eq!(format_go_duration(ns(59_999_600_000)), "1m0s");
        assert_eq!(format_go_duration(ms(5_400_000)), "1h30m0s");
        assert_eq!(format_go_duration(ms(90_061_001)), "25h1m1.001s");
    }

    #[test]
    fn byte_counts() {
        assert_eq!(format_bytes(0), "0 bytes");
        assert_eq!(format_bytes(1), "1 bytes");
        assert_eq!(format_bytes(1200), "1.2 KiB");
        assert_eq!(format_bytes(1_572_864), "1.5 MiB");
    }
}
