//! A buyer's hours of operation (`hours`, `timezone`), compiled into the minute-of-week intervals
//! during which it takes leads, so that a check is one time-zone conversion plus a short scan.
//!
//! # Syntax
//! Each entry is `DAYS [HH:MM-HH:MM]`, days and names in any case:
//! - `DAYS` is a day (`mon` or `monday`), a range (`mon-fri`; ranges wrap, so `fri-mon` is Friday to
//!   Monday and `sun-sat` is the whole week), a comma list of those (`mon,wed,fri`, `mon-wed,sat`),
//!   or `daily` / `*` for every day; a time range alone (`08:00-20:00`) is every day too.
//! - The time range is local wall-clock time; `24:00` may end a range. An end at or before the
//!   start runs over midnight into the next day: `fri 22:00-02:00` is Friday 22:00 to Saturday
//!   02:00 (and `sun 22:00-02:00` reaches into Monday). Without a time range the whole day is open.
//! - The entry `*` alone means always open, and so does an empty list.
//!
//! Times are wall-clock in the buyer's zone: on a spring-forward night the skipped hour simply
//! never happens, and on a fall-back night a repeated hour is open both times if it is in range.

#[cfg(test)]
mod tests;

use crate::caps::calendar::{LocalClock, MINUTES_PER_DAY, MINUTES_PER_WEEK};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::fmt;

/// Most `hours` entries per buyer.
pub const MAX_HOURS_ENTRIES: usize = 64;

/// Errors reading a buyer's `timezone` and `hours`; each names the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    /// `timezone` is not an IANA time-zone name.
    UnknownTimeZone(String),
    /// More than [`MAX_HOURS_ENTRIES`] entries in `hours`.
    TooManyEntries,
    /// `hours[index]` cannot be read; `reason` says why.
    BadEntry {
        /// Position in `hours`.
        index: usize,
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ScheduleError {
    /// The key at fault, relative to the buyer: `timezone`, `hours` or `hours[i]`.
    pub fn key(&self) -> String {
        match self {
            ScheduleError::UnknownTimeZone(_) => "timezone".to_string(),
            ScheduleError::TooManyEntries => "hours".to_string(),
            ScheduleError::BadEntry { index, .. } => format!("hours[{index}]"),
        }
    }
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::UnknownTimeZone(name) => {
                write!(f, "timezone: unknown time zone {name:?} (expected an IANA name such as \"America/Chicago\")")
            }
            ScheduleError::TooManyEntries => {
                write!(f, "hours: more than {MAX_HOURS_ENTRIES} entries")
            }
            ScheduleError::BadEntry {
                index,
                entry,
                reason,
            } => write!(f, "hours[{index}]: {entry:?}: {reason}"),
        }
    }
}

impl std::error::Error for ScheduleError {}

impl From<ScheduleError> for String {
    fn from(e: ScheduleError) -> String {
        e.to_string()
    }
}

/// When a buyer takes leads, in its own zone.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    tz: Tz,
    /// Half-open `[start, end)` minute-of-week intervals, sorted, disjoint and not touching.
    /// Empty with `always` set when the buyer is always open.
    intervals: Box<[(u16, u16)]>,
    always: bool,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::always(Tz::UTC)
    }
}

/// Parse a time-zone name; `None` is UTC.
pub fn parse_tz(timezone: Option<&str>) -> Result<Tz, ScheduleError> {
    match timezone.map(str::trim) {
        None | Some("") => Ok(Tz::UTC),
        Some(name) => name
            .parse::<Tz>()
            .map_err(|_| ScheduleError::UnknownTimeZone(name.to_string())),
    }
}

impl Schedule {
    /// A schedule that is always open, in `tz` (which still governs the buyer's cap windows).
    pub fn always(tz: Tz) -> Schedule {
        Schedule {
            tz,
            intervals: Box::new([]),
            always: true,
        }
    }

    /// Read a buyer's `timezone` (IANA name, default UTC) and `hours` (empty = always open).
    pub fn parse(timezone: Option<&str>, hours: &[String]) -> Result<Schedule, ScheduleError> {
        let tz = parse_tz(timezone)?;
        if hours.is_empty() {
            return Ok(Schedule::always(tz));
        }
        if hours.len() > MAX_HOURS_ENTRIES {
            return Err(ScheduleError::TooManyEntries);
        }
        let mut raw: Vec<(u16, u16)> = Vec::new();
        for (index, entry) in hours.iter().enumerate() {
            parse_entry(entry, &mut raw).map_err(|reason| ScheduleError::BadEntry {
                index,
                entry: entry.clone(),
                reason,
            })?;
        }
        raw.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(raw.len());
        for (s, e) in raw {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        if merged == [(0, MINUTES_PER_WEEK)] {
            return Ok(Schedule::always(tz));
        }
        Ok(Schedule {
            tz,
            intervals: merged.into_boxed_slice(),
            always: false,
        })
    }

    /// The buyer's zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// True when the buyer has no closed hours.
    pub fn is_always_open(&self) -> bool {
        self.always
    }

    /// Whether the buyer takes leads at `now`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.always || self.is_open_at(LocalClock::at(self.tz, now).minute_of_week)
    }

    /// Whether the buyer takes leads at this local minute of the week (Monday 00:00 = 0).
    pub fn is_open_at(&self, minute_of_week: u16) -> bool {
        if self.always {
            return true;
        }
        // Few intervals per buyer: a linear scan over sorted pairs beats a search.
        for &(s, e) in self.intervals.iter() {
            if minute_of_week < s {
                return false;
            }
            if minute_of_week < e {
                return true;
            }
        }
        false
    }

    /// Whether the buyer takes leads at the instant `clock` shows, reusing its minute of the week
    /// when it was computed in this schedule's zone.
    pub fn is_open_on(&self, clock: &LocalClock) -> bool {
        if self.always {
            true
        } else if clock.tz == self.tz {
            self.is_open_at(clock.minute_of_week)
        } else {
            self.is_open(clock.now)
        }
    }
}

/// Parse one entry, pushing its intervals (possibly wrapping past the week's end, split in two).
fn parse_entry(entry: &str, out: &mut Vec<(u16, u16)>) -> Result<(), String> {
    let text = entry.trim().to_ascii_lowercase();
    let mut parts = text.split_whitespace();
    let first = parts.next().ok_or_else(|| "empty entry".to_string())?;
    // A time range alone, `08:00-20:00`, is every day.
    let (days_text, range_text) = if first.contains(':') {
        ("daily", Some(first))
    } else {
        (first, parts.next())
    };
    if let Some(extra) = parts.next() {
        return Err(format!("unexpected {extra:?} after the time range"));
    }
    let days = parse_days(days_text)?;
    let (start, end) = match range_text {
        None => (0, MINUTES_PER_DAY),
        Some(r) => parse_range(r)?,
    };
    // A range ending at or before its start runs into the next day.
    let len = if end > start {
        end - start
    } else {
        end + MINUTES_PER_DAY - start
    };
    for day in 0..7u16 {
        if days & (1 << day) == 0 {
            continue;
        }
        let s = day * MINUTES_PER_DAY + start;
        let e = s + len;
        if e <= MINUTES_PER_WEEK {
            out.push((s, e));
        } else {
            out.push((s, MINUTES_PER_WEEK));
            out.push((0, e - MINUTES_PER_WEEK));
        }
    }
    Ok(())
}

/// A set of weekdays as a bitmask, Monday = bit 0.
fn parse_days(text: &str) -> Result<u8, String> {
    if text == "daily" || text == "*" {
        return Ok(0x7f);
    }
    let mut mask = 0u8;
    for item in text.split(',') {
        match item.split_once('-') {
            None => mask |= 1 << parse_day(item)?,
            Some((a, b)) => {
                let (a, b) = (parse_day(a)?, parse_day(b)?);
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
        }
    }
    Ok(mask)
}

fn parse_day(text: &str) -> Result<u8, String> {
    const DAYS: [(&str, &str); 7] = [
        ("mon", "monday"),
        ("tue", "tuesday"),
        ("wed", "wednesday"),
        ("thu", "thursday"),
        ("fri", "friday"),
        ("sat", "saturday"),
        ("sun", "sunday"),
    ];
    DAYS.iter()
        .position(|(short, long)| text == *short || text == *long)
        .map(|i| i as u8)
        .ok_or_else(|| {
            format!("unknown day {text:?} (expected mon, tue, wed, thu, fri, sat, sun, or daily)")
        })
}

/// `HH:MM-HH:MM` as minutes of the day; the end may be `24:00`.
fn parse_range(text: &str) -> Result<(u16, u16), String> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("expected a time range such as 08:00-20:00, not {text:?}"))?;
    let start = parse_time(a)?;
    let end = parse_time(b)?;
    if start == MINUTES_PER_DAY {
        return Err("a range cannot start at 24:00".to_string());
    }
    if start == end {
        return Err(format!(
            "empty time range {text:?} (write 00:00-24:00 for a whole day)"
        ));
    }
    Ok((start, end))
}

fn parse_time(text: &str) -> Result<u16, String> {
    let bad = || format!("expected a time HH:MM, not {text:?}");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(format!("{text:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}
