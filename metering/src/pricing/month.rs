//! The billing month: a calendar month in UTC, written `YYYY-MM`.

use std::fmt;

use time::{Date, Month};

/// A calendar month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BillingMonth {
    first: Date,
}

/// A month that is not `YYYY-MM`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a month written YYYY-MM (e.g. 2026-11)")]
pub struct BadMonth(pub String);

impl BillingMonth {
    /// Parses `YYYY-MM` (years 1970 to 2105, the store's range).
    ///
    /// ```
    /// use metering::pricing::BillingMonth;
    /// let feb = BillingMonth::parse("2028-02").unwrap();
    /// assert_eq!(feb.days(), 29);
    /// assert_eq!(feb.to_string(), "2028-02");
    /// assert!(BillingMonth::parse("2028-2").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, BadMonth> {
        let bad = || BadMonth(s.to_owned());
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month = Month::try_from(m.parse::<u8>().map_err(|_| bad())?).map_err(|_| bad())?;
        if !(1970..=2105).contains(&year) {
            return Err(bad());
        }
        Date::from_calendar_date(year, month, 1).map(|first| Self { first }).map_err(|_| bad())
    }

    /// The month containing `date`.
    pub fn of(date: Date) -> Self {
        Self { first: date.replace_day(1).expect("day 1 exists") }
    }

    /// The month before.
    ///
    /// ```
    /// use metering::pricing::BillingMonth;
    /// assert_eq!(BillingMonth::parse("2027-01").unwrap().previous().to_string(), "2026-12");
    /// ```
    pub fn previous(self) -> Self {
        Self::of(self.first.previous_day().unwrap_or(self.first))
    }

    /// Its first day.
    pub const fn first_day(self) -> Date {
        self.first
    }

    /// The first day of the next month (the end, exclusive).
    pub fn end(self) -> Date {
        self.first.replace_day(self.days() as u8).expect("last day exists").next_day().expect("within the calendar")
    }

    /// Its last day.
    pub fn last_day(self) -> Date {
        self.end().previous_day().expect("within the calendar")
    }

    /// Number of days (28 to 31).
    pub fn days(self) -> u32 {
        u32::from(self.first.month().length(self.first.year()))
    }
}

/// `date` as `YYYY-MM-DD`, as the plans file and invoices write days.
pub(crate) fn ymd(date: Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

impl fmt::Display for BillingMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.first.year(), u8::from(self.first.month()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn months_parse_and_bound() {
        let dec = BillingMonth::parse("2026-12").unwrap();
        assert_eq!(
            (dec.first_day(), dec.last_day(), dec.end(), dec.days()),
            (date!(2026 - 12 - 01), date!(2026 - 12 - 31), date!(2027 - 01 - 01), 31)
        );
        assert_eq!(BillingMonth::parse("2026-11").unwrap().days(), 30);
        assert_eq!(BillingMonth::parse("2027-02").unwrap().days(), 28);
        assert_eq!(BillingMonth::of(date!(2026 - 11 - 16)), BillingMonth::parse("2026-11").unwrap());
        for bad in ["2026-13", "2026-00", "26-11", "2026-1", "2026/11", "2026-11-01", "1969-12", "２026-11", ""] {
            assert_eq!(BillingMonth::parse(bad), Err(BadMonth(bad.into())), "{bad}");
        }
    }
}
