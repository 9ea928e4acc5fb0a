//! The delivery-latency histogram, filled by every stream at once.
//!
//! prometheus_client's `Histogram` takes a mutex per observation; one observation per delivered
//! event made that mutex the one lock every stream of a 10,000-stream fan-out fought over, from
//! both cores. Here the buckets are atomics, and a stream counts a whole write in a
//! [`Latencies`] of its own and adds it once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Buckets with an upper bound: 100 µs, doubling, to about 6.5 s; then `+Inf`. Every latency
/// histogram here has these (`latency_buckets` in the parent module too).
pub(super) const BOUNDED: usize = 17;
const FIRST_BOUND_NANOS: u64 = 100_000;
/// The first bound, in seconds.
pub(super) const FIRST_BOUND: f64 = FIRST_BOUND_NANOS as f64 / 1e9;

/// Index of the bucket `latency` falls in: the first whose bound it does not exceed.
fn bucket(latency: Duration) -> usize {
    let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    // nanos <= FIRST << k  exactly when  (nanos - 1) / FIRST < 2^k.
    let quotient = nanos.saturating_sub(1) / FIRST_BOUND_NANOS;
    ((u64::BITS - quotient.leading_zeros()) as usize).min(BOUNDED)
}

/// Latencies counted locally, for one [`Histogram::add`].
#[derive(Debug, Default)]
pub struct Latencies {
    counts: [u64; BOUNDED + 1],
    nanos: u64,
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        self.counts[bucket(latency)] += 1;
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.nanos = self.nanos.saturating_add(nanos);
    }
}

/// A latency histogram in seconds with lock-free buckets; clones share them.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    inner: Arc<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    counts: [AtomicU64; BOUNDED + 1],
    nanos: AtomicU64,
}

impl Histogram {
    /// Adds what `latencies` counted: an atomic add per bucket it touched.
    pub fn add(&self, latencies: &Latencies) {
        for (shared, &count) in self.inner.counts.iter().zip(&latencies.counts) {
            if count > 0 {
                shared.fetch_add(count, Ordering::Relaxed);
            }
        }
        if latencies.nanos > 0 {
            self.inner
                .nanos
                .fetch_add(latencies.nanos, Ordering::Relaxed);
        }
    }
}

impl Histogram {
    /// Each bucket's count so far (not cumulative), for quantiles between two readings.
    pub(super) fn counts(&self) -> [u64; BOUNDED + 1] {
        std::array::from_fn(|k| self.inner.counts[k].load(Ordering::Relaxed))
    }
}

/// The upper bound, in milliseconds, of the bucket holding the `q` quantile of `counts` (as
/// [`Histogram::counts`] gives them); `None` with nothing counted, infinite past the last bound.
pub(super) fn quantile_ms(counts: &[u64; BOUNDED + 1], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based: at least the first observation.
    let rank = ((total as f64 * q).ceil() as u64).max(1);
    let mut seen = 0;
    for (k, &count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(if k < BOUNDED {
                (FIRST_BOUND_NANOS << k) as f64 / 1e6
            } else {
                f64::INFINITY
            });
        }
    }
    None
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = (0..=BOUNDED)
            .map(|k| {
                let bound = if k < BOUNDED {
                    (FIRST_BOUND_NANOS << k) as f64 / 1e9
                } else {
                    f64::INFINITY
                };
                (bound, self.inner.counts[k].load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        let sum = self.inner.nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_falls_in_the_first_bucket_it_does_not_exceed() {
        let micros = Duration::from_micros;
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(micros(100)), 0);
        assert_eq!(bucket(micros(100) + Duration::from_nanos(1)), 1);
        assert_eq!(bucket(micros(200)), 1);
        assert_eq!(bucket(micros(201)), 2);
        assert_eq!(bucket(micros(100 << 16)), 16);
        assert_eq!(bucket(micros((100 << 16) + 1)), BOUNDED);
        assert_eq!(bucket(Duration::MAX), BOUNDED);
    }

    #[test]
    fn batches_add_up() {
        let histogram = Histogram::default();
        let mut batch = Latencies::default();
        batch.record(Duration::from_micros(50));
        batch.record(Duration::from_millis(3));
        histogram.add(&batch);
        histogram.add(&batch);
        let counts: Vec<u64> = histogram
            .inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 2);
        assert_eq!(counts[bucket(Duration::from_millis(3))], 2);
        assert_eq!(counts.iter().sum::<u64>(), 4);
        assert_eq!(histogram.inner.nanos.load(Ordering::Relaxed), 2 * 3_050_000);
    }

    #[test]
    fn quantiles_are_their_bucket_bounds() {
        let mut counts = [0; BOUNDED + 1];
        assert_eq!(quantile_ms(&counts, 0.5), None);
        counts[0] = 98;
        counts[3] = 2;
        assert_eq!(quantile_ms(&counts, 0.5), Some(0.1));
        assert_eq!(quantile_ms(&counts, 0.99), Some(0.8));
        counts[BOUNDED] = 100;
        assert_eq!(quantile_ms(&counts, 0.99), Some(f64::INFINITY));
    }
}
