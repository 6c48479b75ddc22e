//! The size of a roll-up bucket, and the bucket arithmetic every read shares.

use time::{Date, Month, OffsetDateTime};

/// The size of a roll-up bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One UTC minute (the stored resolution).
    Minute,
    /// One UTC hour.
    Hour,
    /// One UTC day.
    Day,
    /// One UTC calendar month.
    Month,
}

impl Granularity {
    /// Parses `minute`, `hour`, `day` or `month`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "minute" => Self::Minute,
            "hour" => Self::Hour,
            "day" => Self::Day,
            "month" => Self::Month,
            _ => return None,
        })
    }

    /// The name `parse` accepts.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// Whether buckets of `seconds` (an hour or a day) serve a read of `[from, to)` in these
    /// buckets: each of these is made of whole ones, and the read starts and ends on one.
    pub(crate) fn tiled_by(self, seconds: i64, from: OffsetDateTime, to: OffsetDateTime) -> bool {
        let coarse = match self {
            Self::Minute => false,
            Self::Hour => seconds <= 3600,
            Self::Day | Self::Month => true,
        };
        coarse && from.unix_timestamp() % seconds == 0 && to.unix_timestamp() % seconds == 0
    }

    pub(crate) fn bucket_expr(self) -> &'static str {
        match self {
            Self::Minute => "toUInt32(window_start)",
            Self::Hour => "toUInt32(toStartOfHour(window_start))",
            Self::Day => "toUInt32(toStartOfDay(window_start))",
            Self::Month => "toUInt32(toDateTime(toStartOfMonth(window_start), 'UTC'))",
        }
    }

    /// The end (exclusive) of the bucket starting at `start`, in Unix seconds.
    ///
    /// ```
    /// use metering::store::rollup::Granularity;
    /// use time::macros::datetime;
    /// let feb = datetime!(2028-02-01 00:00 UTC).unix_timestamp();
    /// assert_eq!(Granularity::Month.bucket_end(feb), datetime!(2028-03-01 00:00 UTC).unix_timestamp());
    /// ```
    pub fn bucket_end(self, start: i64) -> i64 {
        match self {
            Self::Minute => start + 60,
            Self::Hour => start + 3600,
            Self::Day => start + 86_400,
            Self::Month => {
                let date = OffsetDateTime::from_unix_timestamp(start).map(|t| t.date()).unwrap_or(Date::MIN);
                let (year, month) = match date.month() {
                    Month::December => (date.year() + 1, Month::January),
                    m => (date.year(), m.next()),
                };
                Date::from_calendar_date(year, month, 1)
                    .map(|d| d.midnight().assume_utc().unix_timestamp())
                    .unwrap_or(i64::MAX)
            }
        }
    }
}
