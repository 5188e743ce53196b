//! The market: a provider's ask adjusted by its utilization.
//!
//! With `u` the share of the provider's GPUs *of that model* that are allocated when the
//! decision is made (in basis points, `0..=10_000`), the price per GPU-hour is
//!
//! ```text
//! price = ask × (10_000 − discount + (discount + surge) × u / 10_000) / 10_000
//! ```
//!
//! so an idle provider sells at `ask × (1 − discount)`, a full one at `ask × (1 + surge)`,
//! linearly in between. All arithmetic is in integers (micros, basis points), rounded
//! down. A provider whose price is above a job's ceiling is filtered out for that job:
//! the job never pays more than its ceiling. The price is fixed at placement.

use crate::snapshot::Micros;

/// Parameters of the utilization adjustment, in basis points (1/100 of a percent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarketParams {
    /// Discount at zero utilization (e.g. 1000 = 10 %). At most 10 000.
    pub discount_bp: u32,
    /// Surcharge at full utilization (e.g. 5000 = 50 %).
    pub surge_bp: u32,
}

impl Default for MarketParams {
    fn default() -> Self {
        Self {
            discount_bp: 1_000,
            surge_bp: 5_000,
        }
    }
}

/// Utilization in basis points; an empty pool counts as idle.
pub fn utilization_bp(busy: u32, total: u32) -> u32 {
    if total == 0 {
        return 0;
    }
    let bp = u64::from(busy.min(total)) * 10_000 / u64::from(total);
    u32::try_from(bp).unwrap_or(10_000)
}

/// The market price per GPU-hour for `ask` at `busy` of `total` GPUs allocated.
pub fn market_price(ask: Micros, busy: u32, total: u32, params: &MarketParams) -> Micros {
    let u = u128::from(utilization_bp(busy, total));
    let discount = u128::from(params.discount_bp.min(10_000));
    let surge = u128::from(params.surge_bp);
    let multiplier = 10_000 - discount + (discount + surge) * u / 10_000;
    let price = u128::from(ask) * multiplier / 10_000;
    Micros::try_from(price).unwrap_or(Micros::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_moves_with_utilization() {
        let p = MarketParams::default();
        assert_eq!(market_price(2_000_000, 0, 100, &p), 1_800_000);
        assert_eq!(market_price(2_000_000, 100, 100, &p), 3_000_000);
        assert_eq!(market_price(2_000_000, 50, 100, &p), 2_400_000);
        assert_eq!(market_price(2_000_000, 0, 0, &p), 1_800_000);
    }

    #[test]
    fn price_is_monotonic_in_utilization() {
        let p = MarketParams::default();
        let mut last = 0;
        for busy in 0..=64 {
            let price = market_price(1_234_567, busy, 64, &p);
            assert!(price >= last);
            last = price;
        }
    }

    #[test]
    fn flat_market_is_the_ask() {
        let p = MarketParams {
            discount_bp: 0,
            surge_bp: 0,
        };
        assert_eq!(market_price(777, 3, 4, &p), 777);
        assert_eq!(
            market_price(Micros::MAX, 4, 4, &MarketParams::default()),
            Micros::MAX
        );
    }
}
