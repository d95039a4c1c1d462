//! Quantiles from cumulative histogram buckets, computed as PromQL's `histogram_quantile`
//! does for classic histograms: linear interpolation inside the bucket holding the rank,
//! the lowest bucket starting at 0 (when its bound is positive), and a rank falling in the
//! `+Inf` bucket answered with the highest finite bound.

/// `q`-quantile (0 ≤ q ≤ 1) of cumulative `(upper bound, count)` buckets in any order.
/// `None` when there is no `+Inf` bucket, fewer than two buckets, no observation, or `q`
/// is NaN. `q < 0` gives -∞ and `q > 1` +∞, as in PromQL.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if q.is_nan() {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    let mut b: Vec<(f64, f64)> = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    // Buckets with the same bound (from merging series) add up.
    b.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 += later.1;
            true
        } else {
            false
        }
    });
    if b.len() < 2 || b.last()?.0 != f64::INFINITY {
        return None;
    }
    // Counts must not decrease (scrapes racing with observations can make them do so):
    // PromQL raises each to the largest count below it.
    let mut max = f64::NEG_INFINITY;
    for x in &mut b {
        max = max.max(x.1);
        x.1 = max;
    }
    let observations = b.last()?.1;
    if observations <= 0.0 || observations.is_nan() {
        return None;
    }
    let rank = q * observations;
    let i = b.partition_point(|x| x.1 < rank);
    if i == b.len() - 1 {
        return Some(b[b.len() - 2].0);
    }
    if i == 0 && b[0].0 <= 0.0 {
        return Some(b[0].0);
    }
    let (start, below) = if i == 0 {
        (0.0, 0.0)
    } else {
        (b[i - 1].0, b[i - 1].1)
    };
    let end = b[i].0;
    let count = b[i].1 - below;
    Some(start + (end - start) * ((rank - below) / count))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    fn close(a: Option<f64>, b: f64) {
        let a = a.unwrap();
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn interpolates_inside_the_bucket_holding_the_rank() {
        // 10 observations ≤ 1, 10 in (1, 5], 20 in (5, 10]; 40 in all.
        let b = [(1.0, 10.0), (5.0, 20.0), (10.0, 40.0), (INF, 40.0)];
        // Rank 20 = the end of the (1,5] bucket.
        close(histogram_quantile(0.5, &b), 5.0);
        // Rank 10 = the end of the first bucket, which starts at 0.
        close(histogram_quantile(0.25, &b), 1.0);
        // Rank 5: halfway into [0, 1].
        close(histogram_quantile(0.125, &b), 0.5);
        // Rank 36 = 16 of the 20 in (5, 10]: 5 + 5 * 16/20 = 9.
        close(histogram_quantile(0.9, &b), 9.0);
        // Rank 39.6: 5 + 5 * 19.6/20 = 9.9.
        close(histogram_quantile(0.99, &b), 9.9);
    }

    #[test]
    fn rank_in_the_inf_bucket_gives_the_highest_finite_bound() {
        let b = [(0.5, 0.0), (1.0, 1.0), (INF, 10.0)];
        close(histogram_quantile(0.99, &b), 1.0);
        close(histogram_quantile(0.05, &b), 0.75);
    }

    #[test]
    fn unsorted_merged_and_non_monotonic_buckets() {
        // The same buckets from two series, shuffled: equal bounds add up.
        let b = [
            (INF, 20.0),
            (1.0, 5.0),
            (5.0, 10.0),
            (1.0, 5.0),
            (5.0, 10.0),
            (INF, 20.0),
        ];
        // Rank 20 of 40: (1, 5] holds 10..20: 5.
        close(histogram_quantile(0.5, &b), 5.0);
        // A count lower than the one below it is raised to it.
        let b = [(1.0, 4.0), (2.0, 3.0), (INF, 4.0)];
        close(histogram_quantile(0.5, &b), 0.5);
    }

    #[test]
    fn no_answer_without_data_or_inf_bucket() {
        assert_eq!(histogram_quantile(0.5, &[(1.0, 0.0), (INF, 0.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(1.0, 3.0), (2.0, 3.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(INF, 3.0)]), None);
        assert_eq!(
            histogram_quantile(f64::NAN, &[(1.0, 1.0), (INF, 1.0)]),
            None
        );
        assert_eq!(
            histogram_quantile(-0.1, &[(1.0, 1.0), (INF, 1.0)]),
            Some(f64::NEG_INFINITY)
        );
        assert_eq!(
            histogram_quantile(1.1, &[(1.0, 1.0), (INF, 1.0)]),
            Some(INF)
        );
    }

    #[test]
    fn non_positive_lowest_bound_is_returned_as_is() {
        let b = [(-1.0, 5.0), (1.0, 10.0), (INF, 10.0)];
        close(histogram_quantile(0.2, &b), -1.0);
        // Rank 7.5 in (-1, 1]: -1 + 2 * 2.5/5 = 0.
        close(histogram_quantile(0.75, &b), 0.0);
    }
}
