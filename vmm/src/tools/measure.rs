//! Small statistics for the benchmarks: percentiles, medians, min/median/max summaries,
//! ratios and throughputs.
//!
//! Every function takes measurements that may be empty or contain junk (NaN, infinities, a
//! zero denominator) and answers `None` rather than a misleading number.

use serde::Serialize;

/// Bytes in a GiB.
pub const GIB: f64 = (1u64 << 30) as f64;
/// Bytes in a MiB.
pub const MIB: f64 = (1u64 << 20) as f64;

/// The `p`-th percentile (0..=100) of `values`, interpolating linearly between the closest
/// ranks (the "type 7" definition of R and NumPy's default): p0 is the minimum, p100 the
/// maximum, p50 of an even count the mean of the middle two. Non-finite values are ignored.
/// `None` if no finite value is left or `p` is out of range.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if !(0.0..=100.0).contains(&p) {
        return None;
    }
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    Some(v[lo] + (v[hi] - v[lo]) * frac)
}

/// The median (the 50th percentile) of `values`.
pub fn median(values: &[f64]) -> Option<f64> {
    percentile(values, 50.0)
}

/// Minimum, median and maximum of a series. In JSON: `{min, median, max}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// The smallest value.
    pub min: f64,
    /// The median.
    pub median: f64,
    /// The largest value.
    pub max: f64,
}

impl Spread {
    /// The spread of the finite values in `values`, or `None` if there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        Some(Spread {
            min: percentile(values, 0.0)?,
            median: median(values)?,
            max: percentile(values, 100.0)?,
        })
    }
}

/// `num / den`, or `None` when either is not finite or `den` is not positive.
pub fn ratio(num: f64, den: f64) -> Option<f64> {
    if !num.is_finite() || !den.is_finite() || den <= 0.0 {
        return None;
    }
    Some(num / den)
}

/// Throughput in GiB/s of `bytes` moved in `secs` seconds (`None` for no time).
pub fn gib_per_s(bytes: u64, secs: f64) -> Option<f64> {
    ratio(bytes as f64 / GIB, secs)
}

/// `a - b` for byte counts that may go either way, as a signed number.
pub fn signed_diff(a: u64, b: u64) -> i64 {
    let d = i128::from(a) - i128::from(b);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert!(close(percentile(&v, 0.0), 1.0));
        assert!(close(percentile(&v, 100.0), 5.0));
        assert!(close(percentile(&v, 50.0), 3.0));
        assert!(close(percentile(&v, 25.0), 2.0));
        assert!(close(percentile(&v, 90.0), 4.6));
        // 1..=100: p99 sits between the 99th and the 100th value.
        let h: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!(close(percentile(&h, 99.0), 99.01));
        assert!(close(percentile(&h, 50.0), 50.5));
        assert!(close(percentile(&[7.0], 99.0), 7.0));
    }

    #[test]
    fn percentile_rejects_junk() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0], -1.0), None);
        assert_eq!(percentile(&[1.0], 100.5), None);
        assert_eq!(percentile(&[f64::NAN, f64::INFINITY], 50.0), None);
        // NaN is skipped, not sorted into the middle.
        assert!(close(percentile(&[f64::NAN, 1.0, 3.0], 50.0), 2.0));
    }

    #[test]
    fn medians_and_spreads() {
        assert!(close(median(&[4.0, 1.0, 3.0, 2.0]), 2.5));
        assert!(close(median(&[9.0, 1.0, 5.0]), 5.0));
        assert_eq!(median(&[]), None);
        let s = Spread::of(&[30.0, 10.0, 20.0, 1000.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (10.0, 25.0, 1000.0));
        assert_eq!(Spread::of(&[]), None);
        let j = serde_json::to_value(s).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"min": 10.0, "median": 25.0, "max": 1000.0})
        );
    }

    #[test]
    fn ratios_and_throughput() {
        assert!(close(ratio(1.0, 4.0), 0.25));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(1.0, -2.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(ratio(1.0, f64::INFINITY), None);
        assert!(close(gib_per_s(1 << 30, 0.5), 2.0));
        assert!(close(gib_per_s(256 << 20, 1.0), 0.25));
        assert_eq!(gib_per_s(1, 0.0), None);
        assert_eq!(signed_diff(3, 5), -2);
        assert_eq!(signed_diff(5, 3), 2);
        assert_eq!(signed_diff(u64::MAX, 0), i64::MAX);
        assert_eq!(signed_diff(0, u64::MAX), i64::MIN);
    }
}
