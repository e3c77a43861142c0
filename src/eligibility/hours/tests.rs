use super::*;
use chrono::TimeZone;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn schedule(tz: Option<&str>, hours: &[&str]) -> Schedule {
    let hours: Vec<String> = hours.iter().map(|s| s.to_string()).collect();
    Schedule::parse(tz, &hours).unwrap()
}

fn parse_err(tz: Option<&str>, hours: &[&str]) -> ScheduleError {
    let hours: Vec<String> = hours.iter().map(|s| s.to_string()).collect();
    Schedule::parse(tz, &hours).unwrap_err()
}

#[test]
fn empty_hours_and_whole_week_entries_are_always_open() {
    for hours in [
        &[][..],
        &["*"],
        &["daily 00:00-24:00"],
        &["sun-sat 00:00-24:00"],
        &["mon-fri", "sat,sun"],
    ] {
        let s = schedule(None, hours);
        assert!(s.is_always_open(), "{hours:?}");
        assert!(s.is_open(utc("2026-11-25T03:00:00Z")));
    }
    assert_eq!(Schedule::default().tz(), Tz::UTC);
}

#[test]
fn example_buyer_hours_in_chicago() {
    // November: Chicago is UTC-6.
    let s = schedule(
        Some("America/Chicago"),
        &["mon-fri 08:00-20:00", "sat 09:00-14:00"],
    );
    assert_eq!(s.tz(), chrono_tz::America::Chicago);
    // Wednesday 2026-11-25.
    assert!(!s.is_open(utc("2026-11-25T13:59:59Z")), "07:59 local");
    assert!(s.is_open(utc("2026-11-25T14:00:00Z")), "08:00 local");
    assert!(
        s.is_open(utc("2026-11-26T01:59:00Z")),
        "Wednesday 19:59 local"
    );
    assert!(
        !s.is_open(utc("2026-11-26T02:00:00Z")),
        "Wednesday 20:00 local"
    );
    // Saturday 2026-11-28.
    assert!(!s.is_open(utc("2026-11-28T14:59:00Z")), "Saturday 08:59");
    assert!(s.is_open(utc("2026-11-28T15:00:00Z")), "Saturday 09:00");
    assert!(!s.is_open(utc("2026-11-28T20:00:00Z")), "Saturday 14:00");
    // Sunday closed all day.
    assert!(!s.is_open(utc("2026-11-29T18:00:00Z")));
    // Friday 21:00 local is Saturday 03:00 UTC: the local day decides.
    assert!(s.is_open(utc("2026-11-28T01:30:00Z")), "Friday 19:30 local");
    assert!(
        !s.is_open(utc("2026-11-28T03:00:00Z")),
        "Friday 21:00 local"
    );
}

#[test]
fn ranges_over_midnight_run_into_the_next_day() {
    // 2026-06-05 is a Friday.
    let s = schedule(None, &["fri 22:00-02:00"]);
    assert!(!s.is_open(utc("2026-06-05T21:59:00Z")));
    assert!(s.is_open(utc("2026-06-05T22:00:00Z")));
    assert!(s.is_open(utc("2026-06-06T00:00:00Z")), "Saturday midnight");
    assert!(s.is_open(utc("2026-06-06T01:59:59Z")));
    assert!(!s.is_open(utc("2026-06-06T02:00:00Z")));
    assert!(
        !s.is_open(utc("2026-06-04T23:00:00Z")),
        "Thursday night is not Friday night"
    );
    assert!(
        !s.is_open(utc("2026-06-05T01:00:00Z")),
        "early Friday belongs to Thursday's range"
    );
}

#[test]
fn a_time_range_alone_is_every_day() {
    // 2026-06-05 is a Friday, 2026-06-07 a Sunday.
    let s = schedule(Some("Asia/Kolkata"), &["22:00-02:00"]);
    assert_eq!(s, schedule(Some("Asia/Kolkata"), &["daily 22:00-02:00"]));
    assert!(s.is_open(utc("2026-06-05T16:30:00Z")), "Friday 22:00 local");
    assert!(s.is_open(utc("2026-06-07T20:29:00Z")), "Monday 01:59 local");
    assert!(
        !s.is_open(utc("2026-06-07T20:30:00Z")),
        "Monday 02:00 local"
    );
    assert!(
        !s.is_open(utc("2026-06-07T12:00:00Z")),
        "Sunday 17:30 local"
    );
}

#[test]
fn ranges_wrap_over_the_week_end() {
    // 2026-06-07 is a Sunday, 2026-06-08 a Monday.
    let s = schedule(None, &["sun 22:00-02:00"]);
    assert!(s.is_open(utc("2026-06-07T23:00:00Z")));
    assert!(
        s.is_open(utc("2026-06-08T01:30:00Z")),
        "Monday 01:30 is Sunday's range"
    );
    assert!(!s.is_open(utc("2026-06-08T02:00:00Z")));
    assert!(!s.is_open(utc("2026-06-07T21:00:00Z")));

    let weekend = schedule(None, &["sat-mon 10:00-11:00"]);
    assert!(weekend.is_open(utc("2026-06-06T10:30:00Z")), "Saturday");
    assert!(weekend.is_open(utc("2026-06-07T10:30:00Z")), "Sunday");
    assert!(weekend.is_open(utc("2026-06-08T10:30:00Z")), "Monday");
    assert!(!weekend.is_open(utc("2026-06-09T10:30:00Z")), "Tuesday");
    assert!(!weekend.is_open(utc("2026-06-05T10:30:00Z")), "Friday");
}

#[test]
fn day_lists_and_names() {
    let s = schedule(None, &["Mon,wed,FRIDAY 10:00-12:00", "tue-tue 9:00-9:30"]);
    assert!(s.is_open(utc("2026-06-01T10:00:00Z")), "Monday");
    assert!(!s.is_open(utc("2026-06-02T10:00:00Z")), "Tuesday 10:00");
    assert!(s.is_open(utc("2026-06-02T09:15:00Z")), "Tuesday 09:15");
    assert!(s.is_open(utc("2026-06-03T11:59:00Z")), "Wednesday");
    assert!(!s.is_open(utc("2026-06-03T12:00:00Z")));
    assert!(s.is_open(utc("2026-06-05T10:00:00Z")), "Friday");
    let all_day = schedule(None, &["sat"]);
    assert!(all_day.is_open(utc("2026-06-06T00:00:00Z")));
    assert!(all_day.is_open(utc("2026-06-06T23:59:59Z")));
    assert!(!all_day.is_open(utc("2026-06-07T00:00:00Z")));
}

#[test]
fn spring_forward_in_chicago() {
    // 2026-03-08: 02:00 CST jumps to 03:00 CDT (08:00 UTC).
    let s = schedule(Some("America/Chicago"), &["sun 02:00-04:00"]);
    assert!(!s.is_open(utc("2026-03-08T07:59:00Z")), "01:59 CST");
    assert!(s.is_open(utc("2026-03-08T08:00:00Z")), "03:00 CDT");
    assert!(s.is_open(utc("2026-03-08T08:59:00Z")), "03:59 CDT");
    assert!(!s.is_open(utc("2026-03-08T09:00:00Z")), "04:00 CDT");

    // Opening time moves by an hour in UTC across the change.
    let weekdays = schedule(Some("America/Chicago"), &["mon-fri 08:00-20:00"]);
    assert!(
        !weekdays.is_open(utc("2026-03-06T13:30:00Z")),
        "Friday 07:30 CST"
    );
    assert!(
        weekdays.is_open(utc("2026-03-06T14:00:00Z")),
        "Friday 08:00 CST"
    );
    assert!(
        weekdays.is_open(utc("2026-03-09T13:00:00Z")),
        "Monday 08:00 CDT"
    );
    assert!(
        !weekdays.is_open(utc("2026-03-10T01:00:00Z")),
        "Monday 20:00 CDT"
    );
}

#[test]
fn fall_back_in_chicago_opens_the_repeated_hour_twice() {
    // 2026-11-01: 02:00 CDT falls back to 01:00 CST (07:00 UTC).
    let s = schedule(Some("America/Chicago"), &["sun 01:00-02:00"]);
    assert!(!s.is_open(utc("2026-11-01T05:59:00Z")), "00:59 CDT");
    assert!(s.is_open(utc("2026-11-01T06:00:00Z")), "01:00 CDT");
    assert!(s.is_open(utc("2026-11-01T06:59:00Z")), "01:59 CDT");
    assert!(s.is_open(utc("2026-11-01T07:00:00Z")), "01:00 CST");
    assert!(s.is_open(utc("2026-11-01T07:59:00Z")), "01:59 CST");
    assert!(!s.is_open(utc("2026-11-01T08:00:00Z")), "02:00 CST");
}

#[test]
fn half_hour_zone() {
    // Asia/Kolkata is UTC+05:30.
    let s = schedule(Some("Asia/Kolkata"), &["daily 09:00-17:00"]);
    assert!(!s.is_open(utc("2026-06-03T03:29:00Z")));
    assert!(s.is_open(utc("2026-06-03T03:30:00Z")));
    assert!(s.is_open(utc("2026-06-03T11:29:00Z")));
    assert!(!s.is_open(utc("2026-06-03T11:30:00Z")));
}

#[test]
fn open_on_a_clock_from_another_zone_recomputes() {
    let s = schedule(Some("America/New_York"), &["mon-fri 09:00-17:00"]);
    let now = utc("2026-06-03T13:30:00Z"); // 09:30 EDT Wednesday
    let utc_clock = LocalClock::at(Tz::UTC, now);
    assert!(s.is_open_on(&utc_clock));
    assert!(s.is_open_on(&LocalClock::at(s.tz(), now)));
    assert!(!s.is_open_on(&LocalClock::at(
        Tz::UTC,
        Utc.with_ymd_and_hms(2026, 6, 3, 12, 0, 0).unwrap()
    )));
}

#[test]
fn errors_name_the_key() {
    let e = parse_err(Some("America/Chicgo"), &[]);
    assert_eq!(e.key(), "timezone");
    assert!(e.to_string().contains("America/Chicgo"));
    for bad in [
        "mun 08:00-10:00",
        "mon 8-10",
        "mon 08:00",
        "mon 08:00-08:00",
        "mon 24:00-02:00",
        "mon 10:00-24:30",
        "mon 10:60-11:00",
        "mon 10:00-11:00 extra",
        "mon-frx",
        "",
        "mon,,tue",
        "08:00",
        "08:00-20:00 mon",
    ] {
        let e = parse_err(None, &["daily", bad]);
        assert_eq!(e.key(), "hours[1]", "{bad:?}: {e}");
    }
    let many: Vec<&str> = vec!["mon"; MAX_HOURS_ENTRIES + 1];
    assert_eq!(parse_err(None, &many), ScheduleError::TooManyEntries);
    let as_string: String = parse_err(None, &["mun"]).into();
    assert!(
        as_string.starts_with("hours[0]: \"mun\": unknown day"),
        "{as_string}"
    );
}
