//! A mergeable latency histogram with integer-only, deterministic buckets.
//!
//! Bucketing is HDR-style: a latency `v` (nanoseconds) below 256 is its own
//! bucket; above, the bucket keeps the power-of-two exponent of `v` and the top
//! 8 significant bits (the leading one and 7 more: 128 sub-buckets per octave).
//! A bucket `[lo, lo + w)` therefore has `lo >= 128 * w`, and [`LatencySketch::quantile`]
//! answers with the bucket's midpoint, so
//!
//! **every quantile is within 1/256 (0.39%) of the true value, relative**:
//! `|answer - exact| * 256 <= exact`, where `exact` is the value of rank
//! `ceil(q * n)` in the sorted latencies. Values below 256 ns are exact.
//!
//! Bucket ids run from 0 to [`MAX_BUCKET`] (7,423 for `u64::MAX`), so they fit a
//! `UInt16` column. The same latencies give the same buckets on every machine:
//! no floats, no data-dependent bucket boundaries, which is what lets a retried
//! batch reproduce byte-identical rows.

/// Sub-buckets per octave: 2^7.
const SUB_BITS: u32 = 7;
const HALF: u64 = 1 << SUB_BITS;

/// The largest bucket id (that of `u64::MAX`).
pub const MAX_BUCKET: u16 = bucket_of(u64::MAX);

/// The relative error bound of [`LatencySketch::quantile`] is `1 / ERROR_DIVISOR`.
pub const ERROR_DIVISOR: u64 = 256;

/// The bucket holding `ns`.
///
/// ```
/// use metering::sla::sketch::{bucket_of, bucket_range};
/// assert_eq!(bucket_of(100), 100);
/// let (lo, hi) = bucket_range(bucket_of(1_000_000));
/// assert!(lo <= 1_000_000 && 1_000_000 <= hi && (hi - lo + 1) * 128 <= lo);
/// ```
pub const fn bucket_of(ns: u64) -> u16 {
    if ns < 2 * HALF {
        return ns as u16;
    }
    let exp = 63 - ns.leading_zeros(); // >= 8
    let shift = exp - SUB_BITS; // >= 1
    let mantissa = ns >> shift; // in [128, 256)
    (shift as u64 * HALF + mantissa) as u16
}

/// The smallest and largest latency in bucket `id` (inclusive).
pub const fn bucket_range(id: u16) -> (u64, u64) {
    let id = id as u64;
    if id < 2 * HALF {
        return (id, id);
    }
    let shift = id / HALF - 1;
    let mantissa = id - shift * HALF; // in [128, 256)
    let lo = mantissa << shift;
    (lo, lo + ((1u64 << shift) - 1))
}

/// The value a bucket stands for: its midpoint, rounded down.
const fn representative(id: u16) -> u64 {
    let (lo, hi) = bucket_range(id);
    lo + (hi - lo) / 2
}

/// A sparse latency histogram: sorted bucket ids and their (non-zero) counts.
///
/// ```
/// use metering::sla::LatencySketch;
/// let mut a = LatencySketch::new();
/// for ms in 1..=1000u64 { a.add(ms * 1_000_000); }
/// let p99 = a.quantile(0.99).unwrap();
/// assert!(p99.abs_diff(990_000_000) * 256 <= 990_000_000);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LatencySketch {
    ids: Vec<u16>,
    counts: Vec<u64>,
}

/// Why stored bucket arrays do not form a sketch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SketchError {
    /// Ids and counts differ in length.
    #[error("{ids} bucket ids but {counts} counts")]
    Lengths {
        /// Number of ids.
        ids: usize,
        /// Number of counts.
        counts: usize,
    },
    /// Ids not strictly increasing, or past [`MAX_BUCKET`].
    #[error("bucket id {0} is out of order or out of range")]
    BadId(u64),
    /// A zero count (never stored).
    #[error("bucket {0} has a zero count")]
    ZeroCount(u16),
}

impl LatencySketch {
    /// An empty sketch.
    pub const fn new() -> Self {
        Self { ids: Vec::new(), counts: Vec::new() }
    }

    /// Rebuilds a sketch from stored columns, checking they are canonical
    /// (strictly increasing ids, non-zero counts), as [`buckets`](Self::buckets) writes them.
    pub fn from_buckets(ids: Vec<u64>, counts: Vec<u64>) -> Result<Self, SketchError> {
        if ids.len() != counts.len() {
            return Err(SketchError::Lengths { ids: ids.len(), counts: counts.len() });
        }
        let mut out = Self { ids: Vec::with_capacity(ids.len()), counts: Vec::with_capacity(ids.len()) };
        for (id, count) in ids.into_iter().zip(counts) {
            let ok = id <= u64::from(MAX_BUCKET) && out.ids.last().is_none_or(|&last| u64::from(last) < id);
            if !ok {
                return Err(SketchError::BadId(id));
            }
            if count == 0 {
                return Err(SketchError::ZeroCount(id as u16));
            }
            out.ids.push(id as u16);
            out.counts.push(count);
        }
        Ok(out)
    }

    /// Records one latency.
    pub fn add(&mut self, ns: u64) {
        self.add_n(bucket_of(ns), 1);
    }

    fn add_n(&mut self, id: u16, n: u64) {
        match self.ids.binary_search(&id) {
            // Saturating: 2^64 requests in one window is not a real input; wrapping would be silent.
            Ok(i) => self.counts[i] = self.counts[i].saturating_add(n),
            Err(i) => {
                self.ids.insert(i, id);
                self.counts.insert(i, n);
            }
        }
    }

    /// Adds everything in `other`: the result equals adding both inputs' latencies to one sketch.
    pub fn merge(&mut self, other: &LatencySketch) {
        if other.ids.is_empty() {
            return;
        }
        let mut ids = Vec::with_capacity(self.ids.len() + other.ids.len());
        let mut counts = Vec::with_capacity(ids.capacity());
        let (mut i, mut j) = (0, 0);
        while i < self.ids.len() || j < other.ids.len() {
            let a = self.ids.get(i).copied().unwrap_or(u16::MAX);
            let b = other.ids.get(j).copied().unwrap_or(u16::MAX);
            let (id, n) = match a.cmp(&b) {
                std::cmp::Ordering::Less => {
                    i += 1;
                    (a, self.counts[i - 1])
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    (b, other.counts[j - 1])
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    (a, self.counts[i - 1].saturating_add(other.counts[j - 1]))
                }
            };
            ids.push(id);
            counts.push(n);
        }
        self.ids = ids;
        self.counts = counts;
    }

    /// Number of latencies recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// `(bucket id, count)` pairs in increasing id order, as stored.
    pub fn buckets(&self) -> impl ExactSizeIterator<Item = (u16, u64)> + '_ {
        self.ids.iter().copied().zip(self.counts.iter().copied())
    }

    /// The `q`-quantile (0 ≤ q ≤ 1, rounded to the nearest millionth), within
    /// 1/256 of the exact value; `None` when empty. See [`quantile_ppm`](Self::quantile_ppm).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        // Only the request is a float: rounding to whole ppm makes 0.07 mean 70,000 ppm
        // exactly, where `ceil(0.07 * 100)` in floats would be 8.
        let ppm = (q.clamp(0.0, 1.0) * 1e6).round() as u32;
        self.quantile_ppm(ppm)
    }

    /// The latency at rank `ceil(ppm * n / 1e6)` (at least 1) of the `n`
    /// recorded, within 1/256 relative; `None` when empty. Integer arithmetic only.
    pub fn quantile_ppm(&self, ppm: u32) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let ppm = u128::from(ppm.min(1_000_000));
        let rank = (ppm * u128::from(n)).div_ceil(1_000_000).max(1) as u64;
        let mut seen = 0u64;
        for (id, c) in self.buckets() {
            seen = seen.saturating_add(c);
            if seen >= rank {
                return Some(representative(id));
            }
        }
        self.ids.last().map(|&id| representative(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 11
        }
    }

    fn exact(sorted: &[u64], ppm: u32) -> u64 {
        let n = sorted.len() as u128;
        let rank = (u128::from(ppm) * n).div_ceil(1_000_000).max(1) as usize;
        sorted[rank - 1]
    }

    #[test]
    fn buckets_tile_the_range_and_hold_the_bound() {
        assert_eq!(MAX_BUCKET, 7423);
        let mut next = 0u64;
        for id in 0..=MAX_BUCKET {
            let (lo, hi) = bucket_range(id);
            assert_eq!(lo, next, "bucket {id} starts where the previous ends");
            assert_eq!((bucket_of(lo), bucket_of(hi)), (id, id));
            let mid = representative(id);
            assert!(lo.abs_diff(mid) * ERROR_DIVISOR <= lo && hi.abs_diff(mid) * ERROR_DIVISOR <= hi, "bucket {id}");
            next = hi.wrapping_add(1);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
    }

    #[test]
    fn quantiles_are_within_the_bound_of_exact_ranks() {
        let mut rng = Lcg(7);
        for (n, max_shift) in [(1usize, 53u64), (7, 53), (1000, 20), (20_000, 53), (5000, 8)] {
            // 53 random bits shifted down by a random amount: latencies from 0 to ~9e15 ns.
            let mut values: Vec<u64> = (0..n).map(|_| rng.next() >> (rng.next() % max_shift)).collect();
            let mut sketch = LatencySketch::new();
            values.iter().for_each(|&v| sketch.add(v));
            values.sort_unstable();
            assert_eq!(sketch.count(), n as u64);
            for ppm in (0..=1_000_000).step_by(2_500).chain([990_000, 999_000, 999_900, 1]) {
                let want = exact(&values, ppm);
                let got = sketch.quantile_ppm(ppm).unwrap();
                assert!(got.abs_diff(want) * ERROR_DIVISOR <= want, "n {n}, ppm {ppm}: {got} vs {want}");
            }
        }
        assert_eq!(LatencySketch::new().quantile(0.5), None);
    }

    #[test]
    fn float_quantiles_round_to_whole_ppm() {
        let mut s = LatencySketch::new();
        (1..=100u64).for_each(|v| s.add(v));
        // ceil(0.07 * 100) is 8 in floats; the 7th value is meant.
        assert_eq!(s.quantile(0.07), Some(7));
        assert_eq!((s.quantile(0.0), s.quantile(1.0), s.quantile(0.5)), (Some(1), Some(100), Some(50)));
    }

    #[test]
    fn merge_equals_adding_everything() {
        let mut rng = Lcg(99);
        let values: Vec<u64> = (0..3000).map(|_| rng.next() >> (rng.next() % 50)).collect();
        let mut all = LatencySketch::new();
        values.iter().for_each(|&v| all.add(v));
        let mut parts = [LatencySketch::new(), LatencySketch::new(), LatencySketch::new()];
        for (i, &v) in values.iter().enumerate() {
            parts[(i * 7 + i / 3) % 3].add(v);
        }
        let mut merged = LatencySketch::new();
        for p in &parts {
            merged.merge(p);
        }
        assert_eq!(merged, all);
        let mut other_order = parts[2].clone();
        other_order.merge(&parts[0]);
        other_order.merge(&parts[1]);
        assert_eq!(other_order, all);
        let (ids, counts): (Vec<u64>, Vec<u64>) = all.buckets().map(|(i, c)| (u64::from(i), c)).unzip();
        assert_eq!(LatencySketch::from_buckets(ids, counts), Ok(all));
    }

    #[test]
    fn stored_buckets_must_be_canonical() {
        assert_eq!(LatencySketch::from_buckets(vec![1], vec![]), Err(SketchError::Lengths { ids: 1, counts: 0 }));
        assert_eq!(LatencySketch::from_buckets(vec![5, 5], vec![1, 1]), Err(SketchError::BadId(5)));
        assert_eq!(LatencySketch::from_buckets(vec![9000], vec![1]), Err(SketchError::BadId(9000)));
        assert_eq!(LatencySketch::from_buckets(vec![3], vec![0]), Err(SketchError::ZeroCount(3)));
    }
}
