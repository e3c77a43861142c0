//! A buyer's local calendar at one instant: where in the week it is (for hours of operation) and
//! which hour, day, week and month window it falls in (for caps).
//!
//! Everything here is integer arithmetic on the UTC timestamp plus the zone's offset at that
//! instant, so one time-zone lookup serves both the schedule and every cap window. Window ids
//! only ever grow with time, even across DST changes, which lets the lock-free counters in
//! [`super::CapTable`] tell a stale window from a newer one.

use chrono::{DateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// Minutes in a week; minute-of-week values are in `0..MINUTES_PER_WEEK`, Monday 00:00 = 0.
pub const MINUTES_PER_WEEK: u16 = 7 * MINUTES_PER_DAY;
/// Minutes in a calendar day on the wall clock.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

const SECS_PER_DAY: i64 = 86_400;
const SECS_PER_HOUR: i64 = 3_600;
/// 1970-01-01 was a Thursday: three days after a Monday.
const EPOCH_WEEKDAY_FROM_MONDAY: i64 = 3;

/// Identifiers of the cap windows an instant falls in, on one zone's calendar.
///
/// Ids are only compared for equality and order; they fit in 32 bits so that an id and a count
/// share one `AtomicU64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowIds {
    /// The local hour's start instant, in UTC minutes since the epoch. Using the UTC start (not the
    /// wall-clock hour) keeps the two 01:00 hours of a fall-back night apart and skips the missing
    /// hour of a spring-forward night, and works for zones offset by 30 or 45 minutes.
    pub hour: u32,
    /// Local calendar date, in days since 1970-01-01.
    pub day: u32,
    /// The local date of the week's Monday, in days since 1970-01-01 (weeks start Monday).
    pub week: u32,
    /// Local `year * 12 + month0`.
    pub month: u32,
}

/// One instant seen on one zone's calendar: computed once per zone per lead, then shared by every
/// buyer in that zone (hours and caps alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalClock {
    /// The zone this view was computed for; consumers in another zone recompute.
    pub tz: Tz,
    /// The instant itself, so a consumer in another zone can recompute from it.
    pub now: DateTime<Utc>,
    /// Local wall-clock minute of the week, Monday 00:00 = 0.
    pub minute_of_week: u16,
    /// The cap windows this instant falls in.
    pub windows: WindowIds,
}

impl LocalClock {
    /// The calendar view of `now` in `tz`.
    pub fn at(tz: Tz, now: DateTime<Utc>) -> LocalClock {
        let utc_secs = now.timestamp();
        let offset_secs = i64::from(
            tz.offset_from_utc_datetime(&now.naive_utc())
                .fix()
                .local_minus_utc(),
        );
        let local_secs = utc_secs + offset_secs;
        let days = local_secs.div_euclid(SECS_PER_DAY);
        let sec_of_day = local_secs.rem_euclid(SECS_PER_DAY);
        let weekday = (days + EPOCH_WEEKDAY_FROM_MONDAY).rem_euclid(7);
        let minute_of_week = weekday * i64::from(MINUTES_PER_DAY) + sec_of_day / 60;
        let hour_start_utc = utc_secs - sec_of_day % SECS_PER_HOUR;
        let (year, month) = civil_year_month(days);
        // Casts below wrap only for instants thousands of years away; ids stay distinct and
        // increasing for any date the exchange will see.
        LocalClock {
            tz,
            now,
            minute_of_week: minute_of_week as u16,
            windows: WindowIds {
                hour: hour_start_utc.div_euclid(60) as u32,
                day: days as u32,
                week: (days - weekday) as u32,
                month: (year * 12 + (month - 1)) as u32,
            },
        }
    }
}

/// Proleptic Gregorian year and month (1..=12) of a day count since 1970-01-01
/// (H. Hinnant's `civil_from_days`), to avoid building a full date on the hot path.
fn civil_year_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}
