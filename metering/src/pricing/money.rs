//! Currencies and the one rounding rule every invoice amount follows.
//!
//! Amounts are [`Decimal`]s, never floats. An amount is rounded exactly once,
//! where it first appears on an invoice, to its currency's minor unit (ISO 4217),
//! **half away from zero** ("commercial rounding": 0.125 → 0.13, −0.125 → −0.13).
//! That is the rule customers and most tax authorities apply when they check an
//! invoice by hand; half-even's benefit, no drift over millions of roundings, does
//! not matter on an invoice with a few dozen rounded figures. Every other figure
//! is a sum of rounded figures.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};

/// A currency Tally can invoice in: its ISO 4217 code and minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

/// The supported currencies, with their ISO 4217 minor units.
pub const CURRENCIES: &[Currency] = &[
    Currency { code: "AUD", minor_units: 2 },
    Currency { code: "BHD", minor_units: 3 },
    Currency { code: "BRL", minor_units: 2 },
    Currency { code: "CAD", minor_units: 2 },
    Currency { code: "CHF", minor_units: 2 },
    Currency { code: "CNY", minor_units: 2 },
    Currency { code: "EUR", minor_units: 2 },
    Currency { code: "GBP", minor_units: 2 },
    Currency { code: "HKD", minor_units: 2 },
    Currency { code: "INR", minor_units: 2 },
    Currency { code: "JPY", minor_units: 0 },
    Currency { code: "KRW", minor_units: 0 },
    Currency { code: "KWD", minor_units: 3 },
    Currency { code: "SEK", minor_units: 2 },
    Currency { code: "SGD", minor_units: 2 },
    Currency { code: "USD", minor_units: 2 },
];

impl Currency {
    /// The currency with ISO 4217 code `code` (upper case), if supported.
    ///
    /// ```
    /// use metering::pricing::money::Currency;
    /// let jpy = Currency::parse("JPY").unwrap();
    /// assert_eq!(jpy.minor_units(), 0);
    /// assert_eq!(jpy.round("1234.5".parse().unwrap()).to_string(), "1235");
    /// let usd = Currency::parse("USD").unwrap();
    /// assert_eq!(usd.round("0.125".parse().unwrap()).to_string(), "0.13");
    /// assert_eq!(usd.round("7".parse().unwrap()).to_string(), "7.00");
    /// assert!(Currency::parse("usd").is_none());
    /// ```
    pub fn parse(code: &str) -> Option<Self> {
        CURRENCIES.iter().copied().find(|c| c.code == code)
    }

    /// The ISO 4217 code.
    pub const fn code(self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point (2 for USD, 0 for JPY, 3 for KWD).
    pub const fn minor_units(self) -> u32 {
        self.minor_units
    }

    /// `amount` rounded half away from zero to the minor unit, written with
    /// exactly that many decimals.
    pub fn round(self, amount: Decimal) -> Decimal {
        let mut rounded = amount.round_dp_with_strategy(self.minor_units, RoundingStrategy::MidpointAwayFromZero);
        rounded.rescale(self.minor_units);
        rounded
    }

    /// The codes of every supported currency, for messages.
    pub fn supported() -> String {
        CURRENCIES.iter().map(|c| c.code).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// `value × numerator / denominator`, exact where a `Decimal` can hold it (28
/// significant digits; the rest is rounded half away from zero, far below any
/// minor unit). `None` on overflow or a zero denominator.
pub fn scale(value: Decimal, numerator: Decimal, denominator: Decimal) -> Option<Decimal> {
    value.checked_mul(numerator)?.checked_div(denominator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn rounding_is_half_away_from_zero_to_iso_minor_units() {
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(usd.round(d("2.345")).to_string(), "2.35");
        assert_eq!(usd.round(d("2.355")).to_string(), "2.36");
        assert_eq!(usd.round(d("2.3449999")).to_string(), "2.34");
        assert_eq!(usd.round(d("-2.345")).to_string(), "-2.35");
        assert_eq!(usd.round(d("0")).to_string(), "0.00");
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(jpy.round(d("0.5")).to_string(), "1");
        assert_eq!(jpy.round(d("2.4999")).to_string(), "2");
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(kwd.round(d("1.0005")).to_string(), "1.001");
        assert_eq!(Currency::parse("CNY").unwrap().minor_units(), 2);
        assert_eq!(Currency::parse("EUR").unwrap().minor_units(), 2);
        assert_eq!(Currency::parse("XXX"), None);
    }

    #[test]
    fn scale_keeps_exact_fractions() {
        assert_eq!(scale(d("1000000"), d("16"), d("30")).map(|v| v.round_dp(6)), Some(d("533333.333333")));
        assert_eq!(scale(d("0.8"), d("12345"), d("10000")), Some(d("0.98760")));
        assert_eq!(scale(d("1"), d("1"), d("0")), None);
    }
}
