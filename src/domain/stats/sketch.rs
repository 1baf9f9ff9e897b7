//! Quantiles from a log-bucketed histogram, as DDSketch keeps them: a value `x > 0` is
//! counted in bucket `ceil(log_γ x)`, and every value of a bucket lies within the
//! relative accuracy of the bucket's estimate. Counts per bucket add up, so sketches merge
//! exactly across time buckets, groups and replicas, and a merged sketch answers as one
//! built from all the values would.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Just under the 1 % SPEC 11 allows, so that rounding at a bucket's edge stays within it.
const RELATIVE_ACCURACY: f64 = 0.0099;

/// Values at or below this (a stint of no measurable length) are counted as zero.
const SMALLEST: f64 = 1e-9;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// How many values fell in each bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sketch {
    /// Values counted as zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    zeros: u64,
    /// Bucket index → count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    buckets: BTreeMap<i32, u64>,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

impl Sketch {
    /// Counts `value` (non-negative).
    pub fn add(&mut self, value: f64) {
        if value <= SMALLEST {
            self.zeros += 1;
        } else {
            let index = (value.ln() / gamma().ln()).ceil() as i32;
            *self.buckets.entry(index).or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        self.zeros += other.zeros;
        for (index, count) in &other.buckets {
            *self.buckets.entry(*index).or_default() += count;
        }
    }

    pub fn count(&self) -> u64 {
        self.zeros + self.buckets.values().sum::<u64>()
    }

    /// The nearest-rank `q`-quantile (the value at rank `ceil(q·n)`), within the relative
    /// accuracy, kept within the exact `[min, max]`; `None` when nothing was counted.
    pub fn quantile(&self, q: f64, min: f64, max: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        if rank <= self.zeros {
            return Some(0.0_f64.clamp(min, max));
        }
        let mut seen = self.zeros;
        for (index, count) in &self.buckets {
            seen += count;
            if seen >= rank {
                let estimate = 2.0 * gamma().powi(*index) / (gamma() + 1.0);
                return Some(estimate.clamp(min, max));
            }
        }
        Some(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nearest_rank(values: &mut [f64], q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    }

    fn sketch_of(values: &[f64]) -> Sketch {
        let mut sketch = Sketch::default();
        for value in values {
            sketch.add(*value);
        }
        sketch
    }

    fn bounds(values: &[f64]) -> (f64, f64) {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }

    #[test]
    fn an_empty_sketch_has_no_quantile() {
        assert_eq!(Sketch::default().quantile(0.5, 0.0, 0.0), None);
    }

    #[test]
    fn zeros_are_counted_and_answered_exactly() {
        let sketch = sketch_of(&[0.0, 0.0, 5.0]);
        assert_eq!(sketch.count(), 3);
        assert_eq!(sketch.quantile(0.5, 0.0, 5.0), Some(0.0));
    }

    proptest! {
        #[test]
        fn every_quantile_is_within_one_percent_of_the_nearest_rank_value(
            mut values in prop::collection::vec(0.000_001f64..1_000_000.0, 1..300),
            q in prop::sample::select(vec![0.5, 0.9, 0.99, 0.01, 1.0]),
        ) {
            let (min, max) = bounds(&values);
            let estimate = sketch_of(&values).quantile(q, min, max).unwrap();
            let exact = nearest_rank(&mut values, q);
            prop_assert!((estimate - exact).abs() <= 0.01 * exact, "{estimate} vs {exact}");
        }

        #[test]
        fn sketches_merged_answer_as_one_sketch_of_all_the_values(
            left in prop::collection::vec(0.0f64..100_000.0, 0..100),
            right in prop::collection::vec(0.0f64..100_000.0, 0..100),
        ) {
            let mut merged = sketch_of(&left);
            merged.merge(&sketch_of(&right));
            let all: Vec<f64> = left.iter().chain(&right).copied().collect();
            prop_assert_eq!(merged, sketch_of(&all));
        }
    }
}
