//! The exchange's own wall-clock time: what the wall clock read at the start, run on by the
//! monotonic clock. Windows that must last as long as they say (an `Idempotency-Key`'s 24
//! hours, a campaign's `dedupe_days`) are measured by it, so a wall clock stepped while the
//! exchange runs neither ends them early nor stretches them. A start reads those windows back
//! from the journal by the records' wall-clock stamps, which this clock equals when made.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// See the module docs.
pub struct StepFreeClock {
    /// The monotonic instant the wall clock was read at, and what it read (µs since the Unix
    /// epoch).
    start: (Instant, u64),
}

impl Default for StepFreeClock {
    fn default() -> Self {
        StepFreeClock::new()
    }
}

impl StepFreeClock {
    /// A clock reading the wall clock's time now.
    pub fn new() -> StepFreeClock {
        StepFreeClock {
            start: (
                Instant::now(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64),
            ),
        }
    }

    /// Now, µs since the Unix epoch, as the wall clock read at [`StepFreeClock::new`] and
    /// the monotonic clock ran on since.
    pub fn now_us(&self) -> u64 {
        self.start.1 + self.start.0.elapsed().as_micros() as u64
    }
}
