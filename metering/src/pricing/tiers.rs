//! Tiered prices: how a billable quantity splits over a meter's tiers.
//!
//! Tiers are listed in order; each but the last has an `up_to` bound (inclusive,
//! in the meter's units, counted over the billable quantity, that is after the
//! free allowance), strictly increasing; the last has none, so every quantity has
//! a price.
//!
//! - **Graduated**: each tier prices the part of the quantity that falls in it
//!   (the first 1,000 at the first price, the next ones at the second...).
//! - **Volume**: the whole quantity is priced at the tier it ends in (1,500 units
//!   with a first tier up to 1,000 are all priced at the second tier's price).

use rust_decimal::Decimal;

/// How a quantity is priced over the tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TierMode {
    /// Each tier prices its own slice of the quantity.
    Graduated,
    /// The tier the quantity ends in prices all of it.
    Volume,
}

impl TierMode {
    /// `graduated` or `volume`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TierMode::Graduated => "graduated",
            TierMode::Volume => "volume",
        }
    }
}

/// One tier: its upper bound and its price per package of units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// Inclusive upper bound of the billable quantity, or `None` for the last tier.
    pub up_to: Option<Decimal>,
    /// Price per `per` units (see [`crate::pricing::plan::MeterPrice::per`]), in the plan's currency.
    pub price: Decimal,
}

/// The quantity each tier prices, in order (one entry per tier, zeros included).
///
/// ```
/// use metering::pricing::tiers::{split, Tier, TierMode};
/// let tiers = [Tier { up_to: Some(1000.into()), price: 2.into() }, Tier { up_to: None, price: 1.into() }];
/// assert_eq!(split(TierMode::Graduated, &tiers, 1500.into()), vec![1000.into(), 500.into()]);
/// assert_eq!(split(TierMode::Volume, &tiers, 1500.into()), vec![0.into(), 1500.into()]);
/// assert_eq!(split(TierMode::Volume, &tiers, 1000.into()), vec![1000.into(), 0.into()]);
/// ```
pub fn split(mode: TierMode, tiers: &[Tier], billable: Decimal) -> Vec<Decimal> {
    let mut out = vec![Decimal::ZERO; tiers.len()];
    if billable <= Decimal::ZERO {
        return out;
    }
    match mode {
        TierMode::Graduated => {
            let mut lower = Decimal::ZERO;
            for (slot, tier) in out.iter_mut().zip(tiers) {
                let upper = tier.up_to.map_or(billable, |u| u.min(billable));
                if upper > lower {
                    *slot = upper - lower;
                }
                lower = tier.up_to.unwrap_or(billable).max(lower);
                if lower >= billable {
                    break;
                }
            }
        }
        TierMode::Volume => {
            let last = tiers.len().saturating_sub(1);
            let at = tiers.iter().position(|t| t.up_to.is_none_or(|u| billable <= u)).unwrap_or(last);
            if let Some(slot) = out.get_mut(at) {
                *slot = billable;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> Vec<Tier> {
        vec![
            Tier { up_to: Some(100.into()), price: 3.into() },
            Tier { up_to: Some(1000.into()), price: 2.into() },
            Tier { up_to: None, price: 1.into() },
        ]
    }

    fn q(v: &[i64]) -> Vec<Decimal> {
        v.iter().map(|&x| Decimal::from(x)).collect()
    }

    #[test]
    fn graduated_fills_each_tier_in_turn() {
        let t = tiers();
        assert_eq!(split(TierMode::Graduated, &t, 0.into()), q(&[0, 0, 0]));
        assert_eq!(split(TierMode::Graduated, &t, 99.into()), q(&[99, 0, 0]));
        assert_eq!(split(TierMode::Graduated, &t, 100.into()), q(&[100, 0, 0]));
        assert_eq!(split(TierMode::Graduated, &t, 101.into()), q(&[100, 1, 0]));
        assert_eq!(split(TierMode::Graduated, &t, 5000.into()), q(&[100, 900, 4000]));
        assert_eq!(
            split(TierMode::Graduated, &t, "100.5".parse().unwrap()),
            vec![100.into(), "0.5".parse().unwrap(), 0.into()]
        );
    }

    #[test]
    fn volume_prices_everything_at_the_tier_it_ends_in() {
        let t = tiers();
        assert_eq!(split(TierMode::Volume, &t, 0.into()), q(&[0, 0, 0]));
        assert_eq!(split(TierMode::Volume, &t, 100.into()), q(&[100, 0, 0]));
        assert_eq!(split(TierMode::Volume, &t, 101.into()), q(&[0, 101, 0]));
        assert_eq!(split(TierMode::Volume, &t, 1000.into()), q(&[0, 1000, 0]));
        assert_eq!(split(TierMode::Volume, &t, 1001.into()), q(&[0, 0, 1001]));
        let single = [Tier { up_to: None, price: 1.into() }];
        assert_eq!(split(TierMode::Volume, &single, 7.into()), q(&[7]));
        assert_eq!(split(TierMode::Graduated, &single, 7.into()), q(&[7]));
    }
}
