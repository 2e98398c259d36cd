//! Go-compatible durations and sizes: the `--*-timeout` grammar (SPEC 2.2) and the duration
//! and byte formats of the connection log lines (SPEC 13.3).

use std::time::Duration;

/// Parses a Go duration (`300s`, `1.5h`, `1h30m`, `-1s`, `0`) into signed nanoseconds.
/// Error: `time: invalid duration "<s>"`.
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
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_end];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(err());
        }
        let value: f64 = num.parse().map_err(|_| err())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        rest = &rest[unit_end..];
        total += value * scale;
    }
    if total > i64::MAX as f64 {
        return Err(err());
    }
    let nanos = total.round() as i128;
    Ok(if neg { -nanos } else { nanos })
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
    }

    #[test]
    fn byte_counts() {
        assert_eq!(format_bytes(0), "0 bytes");
        assert_eq!(format_bytes(1), "1 bytes");
        assert_eq!(format_bytes(1200), "1.2 KiB");
        assert_eq!(format_bytes(1_572_864), "1.5 MiB");
    }
}
