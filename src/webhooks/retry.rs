//! When a failed delivery is tried again (SPEC 12): the next entry of the schedule,
//! jittered by up to ±20 %, or a longer `Retry-After`; nothing after the last entry.

use std::time::Duration;

/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The wait before the next attempt after `failed` failed attempts of an item, or `None`
/// when the schedule is spent (the endpoint is then disabled). `unit` is a random number
/// in [0, 1) that places the jitter.
pub fn next_wait(
    schedule: &[Duration],
    failed: u32,
    retry_after: Option<Duration>,
    unit: f64,
) -> Option<Duration> {
    let index = usize::try_from(failed).ok()?.checked_sub(1)?;
    let planned = *schedule.get(index)?;
    let jittered = planned.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 1.0));
    // A receiver asking for more than a day is heard as a day.
    let asked = retry_after.map(|asked| asked.min(MAX_RETRY_AFTER));
    Some(asked.map_or(jittered, |asked| asked.max(jittered)))
}

/// A `Retry-After` header's wait: seconds, or an HTTP date.
pub fn retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, format)
        .ok()?
        .assume_utc();
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Vec<Duration> {
        [5, 300, 1800].map(Duration::from_secs).to_vec()
    }

    #[test]
    fn each_failure_waits_the_next_entry_jittered_by_at_most_a_fifth() {
        for (failed, planned) in [(1, 5.0), (2, 300.0), (3, 1800.0)] {
            let lowest = next_wait(&schedule(), failed, None, 0.0)
                .unwrap()
                .as_secs_f64();
            let highest = next_wait(&schedule(), failed, None, 0.999_999)
                .unwrap()
                .as_secs_f64();
            assert!((lowest - planned * 0.8).abs() < 1e-6, "{lowest}");
            assert!((highest - planned * 1.2).abs() < 1e-3, "{highest}");
        }
    }

    #[test]
    fn a_failure_after_the_last_entry_has_no_next_attempt() {
        assert_eq!(next_wait(&schedule(), 4, None, 0.5), None);
        assert_eq!(next_wait(&[], 1, None, 0.5), None);
    }

    #[test]
    fn a_longer_retry_after_is_honoured_and_a_shorter_one_is_not() {
        let longer = Duration::from_secs(60);
        assert_eq!(next_wait(&schedule(), 1, Some(longer), 0.5), Some(longer));
        let absurd = Duration::from_secs(99_999_999_999);
        assert_eq!(
            next_wait(&schedule(), 1, Some(absurd), 0.5),
            Some(MAX_RETRY_AFTER)
        );
        let shorter = Duration::from_secs(1);
        assert_eq!(
            next_wait(&schedule(), 1, Some(shorter), 0.5),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn reads_retry_after_as_seconds_or_an_http_date() {
        let now = time::macros::datetime!(2026-12-07 12:00:00 UTC);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Mon, 07 Dec 2026 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after("Mon, 07 Dec 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }
}
