//! A latency histogram with constant memory: log-linear buckets, ≤ 1.6 % error.
//!
//! Values below 64 ns are exact; above, each power of two is split into 64
//! equal sub-buckets, so a recorded value is reported within 1/64 of itself.
//! 3,776 counters cover the whole `u64` range; recording is two shifts and an add.

use std::fmt;
use std::time::Duration;

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) << SUB_BITS;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
    sum_ns: u128,
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Histogram({} samples)", self.total)
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max_ns: 0,
            sum_ns: 0,
        }
    }
}

fn index(ns: u64) -> usize {
    if ns < SUB {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros(); // ≥ SUB_BITS
    let shift = exp - SUB_BITS;
    let sub = (ns >> shift) & (SUB - 1);
    (((shift + 1) as usize) << SUB_BITS) + sub as usize
}

/// The middle of bucket `i`.
fn value_at(i: usize) -> u64 {
    if (i as u64) < SUB {
        return i as u64;
    }
    let shift = (i >> SUB_BITS) as u32 - 1;
    let sub = (i as u64) & (SUB - 1);
    ((SUB + sub) << shift) + ((1u64 << shift) >> 1)
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[index(ns)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns += u128::from(ns);
    }

    /// The value at quantile `q` (0.5 = median), or zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_nanos(value_at(i).min(self.max_ns));
            }
        }
        Duration::from_nanos(self.max_ns)
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    pub fn mean(&self) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((self.sum_ns / u128::from(self.total)) as u64)
    }

    /// `p50 … p99 … p99.9 … max …`, or `no samples`.
    pub fn summary(&self) -> String {
        if self.total == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {}  p99 {}  p99.9 {}  max {}",
            fmt_duration(self.quantile(0.5)),
            fmt_duration(self.quantile(0.99)),
            fmt_duration(self.quantile(0.999)),
            fmt_duration(self.max()),
        )
    }
}

/// `850 ns`, `12.3 µs`, `4.56 ms`, `1.234 s`.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 100_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.3} s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_two_percent() {
        for ns in [
            0u64,
            1,
            63,
            64,
            65,
            127,
            128,
            1_000,
            12_345,
            999_999,
            1 << 40,
            u64::MAX,
        ] {
            let i = index(ns);
            assert!(i < BUCKETS, "{ns} -> {i}");
            let back = value_at(i);
            let err = back.abs_diff(ns) as f64 / (ns.max(1) as f64);
            assert!(err <= 0.016, "{ns} -> bucket {i} -> {back}");
        }
        // Indices are monotonic in the value.
        let mut last = 0;
        for ns in (0..100_000u64).step_by(7) {
            let i = index(ns);
            assert!(i >= last);
            last = i;
        }
    }

    #[test]
    fn quantiles_of_a_uniform_run() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).as_micros() as i64;
        let p99 = h.quantile(0.99).as_micros() as i64;
        assert!((p50 - 500).abs() <= 8, "{p50}");
        assert!((p99 - 990).abs() <= 16, "{p99}");
        assert_eq!(h.max(), Duration::from_micros(1000));
        assert_eq!(h.total, 1000);
    }
}
