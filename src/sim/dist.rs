//! Seedable randomness for the simulators: a xorshift generator and the latency and bid
//! distributions that mock buyers draw from.
//!
//! A tiny generator keeps runs reproducible from one seed and keeps a dependency out of the
//! crate; nothing here is used for anything secret.

use crate::money::Cents;

/// z-score of the 99th percentile of the standard normal distribution, used to turn a
/// (median, p99) pair into a log-normal's sigma.
const Z_P99: f64 = 2.326_347_874;

/// Longest delay any distribution yields: one hour. A sample beyond this is clamped so a
/// misconfigured tail cannot park a reply (and its buffers) forever.
pub const MAX_DELAY_US: u64 = 3_600_000_000;

/// xorshift64* generator: fast, small state, good enough statistics for simulation.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator from `seed`; any seed works (zero is remapped, xorshift's one bad state).
    pub fn new(seed: u64) -> Rng {
        // splitmix64 scrambles nearby seeds (0, 1, 2 for endpoints) into unrelated states.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng {
            state: if z == 0 { 0x2545_F491_4F6C_DD1D } else { z },
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [lo, hi] (inclusive); `lo` when the range is empty.
    pub fn range_u64(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo;
        if span == u64::MAX {
            return self.next_u64();
        }
        lo + self.next_u64() % (span + 1)
    }

    /// Uniform integer in [lo, hi] (inclusive) for signed values such as cents.
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = hi.abs_diff(lo);
        let off = self.range_u64(0, span);
        lo.wrapping_add(off as i64)
    }

    /// True with probability `p` (clamped to [0, 1]).
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        self.next_f64() < p
    }

    /// A standard normal sample (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A response-time distribution in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    /// Always this many milliseconds (0 = answer at once).
    Fixed(u64),
    /// Uniform between the two bounds, inclusive, with microsecond resolution.
    Uniform(u64, u64),
    /// Log-normal with the given median and 99th percentile, in milliseconds: the long right
    /// tail real buyer endpoints show. `p99 <= median` degenerates to `Fixed(median)`.
    LogNormal { median: f64, p99: f64 },
    /// Exponential with the given mean in milliseconds: memoryless service times.
    Exponential { mean: f64 },
}

impl Default for Dist {
    fn default() -> Dist {
        Dist::Fixed(0)
    }
}

impl Dist {
    /// One sample in microseconds, clamped to [0, `MAX_DELAY_US`].
    pub fn sample_us(&self, rng: &mut Rng) -> u64 {
        let us = match *self {
            Dist::Fixed(ms) => ms.saturating_mul(1000) as f64,
            Dist::Uniform(lo, hi) => {
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                rng.range_u64(lo.saturating_mul(1000), hi.saturating_mul(1000)) as f64
            }
            Dist::LogNormal { median, p99 } => {
                if median.is_nan() || median <= 0.0 {
                    0.0
                } else if p99.is_nan() || p99 <= median {
                    median * 1000.0
                } else {
                    let sigma = (p99.ln() - median.ln()) / Z_P99;
                    (median.ln() + sigma * rng.normal()).exp() * 1000.0
                }
            }
            Dist::Exponential { mean } => {
                if mean.is_nan() || mean <= 0.0 {
                    0.0
                } else {
                    -(1.0 - rng.next_f64()).ln() * mean * 1000.0
                }
            }
        };
        if us.is_nan() || us <= 0.0 {
            0
        } else if us >= MAX_DELAY_US as f64 {
            MAX_DELAY_US
        } else {
            us as u64
        }
    }
}

/// A bid distribution in cents.
#[derive(Debug, Clone, PartialEq)]
pub enum BidDist {
    /// Always this bid.
    Fixed(Cents),
    /// Uniform whole cents between the bounds, inclusive.
    Uniform(Cents, Cents),
}

impl Default for BidDist {
    fn default() -> BidDist {
        BidDist::Fixed(4250)
    }
}

impl BidDist {
    /// One bid in cents.
    pub fn sample(&self, rng: &mut Rng) -> Cents {
        match *self {
            BidDist::Fixed(c) => c,
            BidDist::Uniform(lo, hi) => {
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                rng.range_i64(lo, hi)
            }
        }
    }
}
