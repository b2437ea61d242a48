//! The few statistics the pages need, written out so their definitions are plain.

/// The finite values, sorted.
pub fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut out: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    out.sort_unstable_by(f64::total_cmp);
    out
}

/// The `q` quantile of sorted values, interpolating linearly between the two nearest ranks
/// (NumPy's and pandas' default); NaN when there are none.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => {
            let at = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
        }
    }
}

/// The median of sorted values: the middle one, or the mean of the middle two.
pub fn median(sorted: &[f64]) -> f64 {
    quantile(sorted, 0.5)
}

pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// The sample standard deviation (n − 1 in the denominator, as pandas computes it).
pub fn std_dev(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return f64::NAN;
    }
    let m = mean(values);
    let squares: f64 = values.iter().map(|v| (v - m) * (v - m)).sum();
    (squares / (values.len() - 1) as f64).sqrt()
}

/// A round bin width that cuts `0..upper` into about `bins` bins.
pub fn nice_width(upper: f64, bins: usize) -> f64 {
    serving::dashboard::chart::nice_step((upper / bins as f64).max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quartiles_interpolate() {
        assert_eq!(median(&[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), 2.5);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.25), 2.0);
        assert_eq!(quantile(&[0.0, 10.0], 0.25), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(sorted([3.0, f64::NAN, 1.0].into_iter()), vec![1.0, 3.0]);
    }

    #[test]
    fn spread_and_bins() {
        assert!((std_dev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) - 2.138).abs() < 1e-3);
        assert_eq!(nice_width(40_000.0, 40), 1000.0);
        assert_eq!(nice_width(90_000.0, 40), 2500.0);
    }
}
