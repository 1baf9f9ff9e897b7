//! Times on the wire: RFC 3339 in UTC with exactly microsecond precision, the precision
//! the database keeps (SPEC asks for at least milliseconds).

use serde::Serializer;
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

const RFC3339_MICROS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// `2026-11-23T10:15:00.123456Z`.
pub fn format(at: OffsetDateTime) -> String {
    at.to_offset(UtcOffset::UTC)
        .format(RFC3339_MICROS)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// Serializes a time as [`format`] does.
pub fn serialize<S: Serializer>(at: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*at))
}

/// The same for an optional time (`null` when absent).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(
        at: &Option<OffsetDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_str(&format(*at)),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn whole_seconds_still_carry_fractional_digits() {
        assert_eq!(
            format(datetime!(2026-11-23 10:15:00 UTC)),
            "2026-11-23T10:15:00.000000Z"
        );
    }

    #[test]
    fn other_offsets_are_written_in_utc() {
        assert_eq!(
            format(datetime!(2026-11-23 12:15:00.5 +02:00)),
            "2026-11-23T10:15:00.500000Z"
        );
    }
}
