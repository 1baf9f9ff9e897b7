//! The time buckets of a stats query (SPEC 11.1): aligned to the granularity in the
//! query's time zone (local midnight for days, Monday for weeks, so a day or a week is 23
//! or 25 hours long across a DST change), the first and last cut to `[from, to)`.

use jiff::tz::TimeZone;
use jiff::{RoundMode, SignedDuration, Timestamp, Unit, ZonedDateTime, ZonedDateTimeRound};

/// At most this many buckets per group.
pub const MAX_BUCKETS: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Minutes(i64),
    Day,
    Week,
    All,
}

impl Granularity {
    pub const NAMES: [&'static str; 6] = ["PT15M", "PT30M", "PT1H", "P1D", "P7D", "all"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "PT15M" => Some(Self::Minutes(15)),
            "PT30M" => Some(Self::Minutes(30)),
            "PT1H" => Some(Self::Minutes(60)),
            "P1D" => Some(Self::Day),
            "P7D" => Some(Self::Week),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Minutes(15) => "PT15M",
            Self::Minutes(30) => "PT30M",
            Self::Minutes(_) => "PT1H",
            Self::Day => "P1D",
            Self::Week => "P7D",
            Self::All => "all",
        }
    }
}

/// One bucket: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub start: Timestamp,
    pub end: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    #[error("more than {MAX_BUCKETS} buckets: use a coarser granularity or a shorter range")]
    TooMany,
    #[error("the range is outside the dates this service can work with")]
    OutOfRange,
}

/// The buckets of `[from, to)` (`from < to`) at `granularity` in `zone`, in order.
pub fn buckets(
    from: Timestamp,
    to: Timestamp,
    granularity: Granularity,
    zone: &TimeZone,
) -> Result<Vec<Bucket>, BucketError> {
    if granularity == Granularity::All {
        return Ok(vec![Bucket {
            start: from,
            end: to,
        }]);
    }
    let local = from.to_zoned_datetime(zone.clone());
    let mut start = aligned_start(&local, granularity)?;
    let mut buckets = Vec::new();
    while start.timestamp() < to {
        if buckets.len() == MAX_BUCKETS {
            return Err(BucketError::TooMany);
        }
        let next = next_start(&start, granularity)?;
        buckets.push(Bucket {
            start: start.timestamp().max(from),
            end: next.timestamp().min(to),
        });
        start = next;
    }
    Ok(buckets)
}

/// The start of the bucket holding `at`.
fn aligned_start(
    at: &ZonedDateTime,
    granularity: Granularity,
) -> Result<ZonedDateTime, BucketError> {
    let out_of_range = |_| BucketError::OutOfRange;
    match granularity {
        Granularity::Minutes(minutes) => {
            let (unit, increment) = if minutes % 60 == 0 {
                (Unit::Hour, minutes / 60)
            } else {
                (Unit::Minute, minutes)
            };
            at.round(
                ZonedDateTimeRound::new()
                    .smallest(unit)
                    .increment(increment)
                    .mode(RoundMode::Floor),
            )
            .map_err(out_of_range)
        }
        Granularity::Day => at.start_of_day().map_err(out_of_range),
        Granularity::Week => {
            let back = i64::from(at.weekday().to_monday_zero_offset());
            let monday = at
                .checked_sub(jiff::Span::new().days(back))
                .map_err(out_of_range)?;
            monday.start_of_day().map_err(out_of_range)
        }
        Granularity::All => Ok(at.clone()),
    }
}

/// The start of the bucket after the one starting at `start`.
fn next_start(
    start: &ZonedDateTime,
    granularity: Granularity,
) -> Result<ZonedDateTime, BucketError> {
    let out_of_range = |_| BucketError::OutOfRange;
    match granularity {
        // Whole minutes of elapsed time: across a DST change the grid stays aligned,
        // since offsets change by multiples of the step.
        Granularity::Minutes(minutes) => start
            .checked_add(SignedDuration::from_mins(minutes))
            .map_err(out_of_range),
        Granularity::Day => start
            .checked_add(jiff::Span::new().days(1))
            .and_then(|next| next.start_of_day())
            .map_err(out_of_range),
        Granularity::Week => start
            .checked_add(jiff::Span::new().days(7))
            .and_then(|next| next.start_of_day())
            .map_err(out_of_range),
        Granularity::All => Ok(start.clone()),
    }
}

/// `at` as RFC 3339 with the zone's offset at that instant.
pub fn local_rfc3339(at: Timestamp, zone: &TimeZone) -> String {
    let offset = zone.to_offset(at);
    at.display_with_offset(offset).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn hours(bucket: &Bucket) -> i64 {
        bucket.end.duration_since(bucket.start).as_secs() / 3600
    }

    #[test]
    fn days_in_berlin_are_23_and_25_hours_long_across_dst() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let spring = buckets(
            at("2026-03-28T23:00:00Z"),
            at("2026-03-30T22:00:00Z"),
            Granularity::Day,
            &berlin,
        )
        .unwrap();
        assert_eq!(spring.iter().map(hours).collect::<Vec<_>>(), [23, 24]);
        assert_eq!(
            local_rfc3339(spring[0].start, &berlin),
            "2026-03-29T00:00:00+01:00"
        );
        assert_eq!(
            local_rfc3339(spring[1].start, &berlin),
            "2026-03-30T00:00:00+02:00"
        );
        let autumn = buckets(
            at("2026-10-24T22:00:00Z"),
            at("2026-10-26T23:00:00Z"),
            Granularity::Day,
            &berlin,
        )
        .unwrap();
        assert_eq!(autumn.iter().map(hours).collect::<Vec<_>>(), [25, 24]);
    }

    #[test]
    fn weeks_start_on_monday_at_local_midnight() {
        let new_york = TimeZone::get("America/New_York").unwrap();
        let weeks = buckets(
            at("2026-12-09T12:00:00Z"),
            at("2026-12-20T00:00:00Z"),
            Granularity::Week,
            &new_york,
        )
        .unwrap();
        assert_eq!(weeks[0].start, at("2026-12-09T12:00:00Z"), "cut to from");
        assert_eq!(
            local_rfc3339(weeks[1].start, &new_york),
            "2026-12-14T00:00:00-05:00"
        );
        assert_eq!(weeks.len(), 2);
    }

    #[test]
    fn quarter_hours_follow_a_zone_45_minutes_off_the_hour() {
        let kathmandu = TimeZone::get("Asia/Kathmandu").unwrap();
        let hourly = buckets(
            at("2026-12-07T00:00:00Z"),
            at("2026-12-07T02:00:00Z"),
            Granularity::Minutes(60),
            &kathmandu,
        )
        .unwrap();
        let starts: Vec<String> = hourly
            .iter()
            .map(|bucket| local_rfc3339(bucket.start, &kathmandu))
            .collect();
        assert_eq!(
            starts,
            [
                "2026-12-07T05:45:00+05:45",
                "2026-12-07T06:00:00+05:45",
                "2026-12-07T07:00:00+05:45"
            ]
        );
    }

    #[test]
    fn too_many_buckets_are_refused() {
        let utc = TimeZone::UTC;
        let answer = buckets(
            at("2026-01-01T00:00:00Z"),
            at("2026-03-01T00:00:00Z"),
            Granularity::Minutes(15),
            &utc,
        );
        assert_eq!(answer, Err(BucketError::TooMany));
    }
}
