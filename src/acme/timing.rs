//! When to renew and how long to wait after a failure: pure functions of time, so they can be
//! tested without a CA. Owns no state and no threads.

use std::time::{Duration, SystemTime};

/// Maintenance period when `--auto-acme-renew-check-interval` is not set (or not positive).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Attempts at startup before giving up.
pub const INITIAL_ATTEMPTS: u32 = 5;

/// The pause after failed startup attempt `attempt` (1-based): 5 s, doubling, at most 2 min.
pub fn initial_backoff(attempt: u32) -> Duration {
    let secs = 5u64.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    Duration::from_secs(secs.min(120))
}

/// Background retries after a failed renewal, in minutes: quick at first, then hours apart,
/// then every 6 h ([`retry_delay`]) for at most [`RETRY_GIVE_UP`] in all.
const RETRY_MINUTES: &[u64] = &[
    1, 2, 2, 5, 10, 10, 10, 20, 20, 20, 20, 30, 30, 30, 30, 30, 30, 60, 60, 60, 120, 120, 180, 180,
];

/// Background retries stop this long after the first failure; the next check starts afresh.
pub const RETRY_GIVE_UP: Duration = Duration::from_secs(30 * 24 * 3600);

/// The pause before background retry number `failures` (1 after the first failure).
pub fn retry_delay(failures: u32) -> Duration {
    let minutes = RETRY_MINUTES
        .get(failures.saturating_sub(1) as usize)
        .copied()
        .unwrap_or(360);
    Duration::from_secs(minutes * 60)
}

/// Whether a certificate valid from `not_before` to `not_after` is due for renewal at `now`:
/// when at most a third of its lifetime remains (a 90-day certificate 30 days before expiry).
pub fn needs_renewal(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    match not_after.duration_since(now) {
        Ok(remaining) => remaining <= lifetime / 3,
        Err(_) => true,
    }
}

/// When [`needs_renewal`] turns true.
pub fn renewal_due(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    not_after - lifetime / 3
}

/// Whether so little lifetime is left that a failing renewal deserves a loud warning: at most
/// 1/50 of the lifetime, or less than five check periods.
pub fn is_emergency(
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
    check_interval: Duration,
) -> bool {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    match not_after.duration_since(now) {
        Ok(remaining) => remaining <= lifetime / 50 || remaining < check_interval * 5,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    #[test]
    fn startup_backoff_doubles_from_five_seconds_to_two_minutes() {
        let waits: Vec<u64> = (1..=7).map(|a| initial_backoff(a).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 120, 120]);
    }

    #[test]
    fn background_retries_slow_down_to_six_hours() {
        let minutes: Vec<u64> = (1..=27).map(|n| retry_delay(n).as_secs() / 60).collect();
        assert_eq!(&minutes[..5], [1, 2, 2, 5, 10]);
        assert_eq!(minutes[11..17], [30; 6]);
        assert_eq!(minutes[17..20], [60; 3]);
        assert_eq!(&minutes[20..], [120, 120, 180, 180, 360, 360, 360]);
        assert_eq!(retry_delay(1000), Duration::from_secs(6 * 3600));
    }

    #[test]
    fn a_90_day_certificate_renews_30_days_before_expiry() {
        let nb = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let na = nb + 90 * DAY;
        assert!(!needs_renewal(nb, na, na - 31 * DAY));
        assert!(needs_renewal(nb, na, na - 30 * DAY));
        assert!(needs_renewal(nb, na, na + DAY));
        assert_eq!(renewal_due(nb, na), na - 30 * DAY);
    }

    #[test]
    fn a_90_second_certificate_renews_30_seconds_before_expiry() {
        let nb = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let na = nb + Duration::from_secs(90);
        assert!(!needs_renewal(nb, na, na - Duration::from_secs(31)));
        assert!(needs_renewal(nb, na, na - Duration::from_secs(30)));
    }

    #[test]
    fn emergency_is_the_last_fiftieth_or_five_check_periods() {
        let nb = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let na = nb + 100 * DAY;
        let ten_min = Duration::from_secs(600);
        assert!(!is_emergency(nb, na, na - 3 * DAY, ten_min));
        assert!(is_emergency(nb, na, na - 2 * DAY, ten_min));
        assert!(is_emergency(nb, na, na - 3 * DAY, DAY));
    }
}
