use super::*;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const CHICAGO: Tz = chrono_tz::America::Chicago;

fn table(limits: CapLimits, tz: Tz) -> CapTable {
    CapTable::new(&[(limits, tz)])
}

/// What both of a window kind's counters hold (tests that count in one window only).
fn count(t: &CapTable, buyer: usize, window: usize) -> u64 {
    t.entries[buyer].counters[window]
        .iter()
        .map(|c| unpack(c.load(Ordering::SeqCst)).1)
        .sum()
}

/// Reserve `n` leads at `now`, keeping them; returns how many succeeded.
fn take(t: &CapTable, now: DateTime<Utc>, n: usize) -> usize {
    (0..n).filter_map(|_| t.reserve(0, now, 100)).count()
}

#[test]
fn uncapped_buyers_always_have_room() {
    let t = table(CapLimits::UNCAPPED, Tz::UTC);
    let now = utc("2026-06-03T12:00:00Z");
    assert_eq!(take(&t, now, 1000), 1000);
    assert!(t.has_room(0, now));
    assert_eq!(
        t.remaining(0, now),
        CapsLeft {
            paused: false,
            hourly: None,
            daily: None,
            weekly: None,
            monthly: None,
            daily_budget_cents: None,
            weekly_budget_cents: None,
            monthly_budget_cents: None,
        }
    );
}

#[test]
fn hourly_cap_rolls_over_at_the_local_hour() {
    let t = table(
        CapLimits {
            hourly: Some(2),
            ..CapLimits::UNCAPPED
        },
        CHICAGO,
    );
    assert_eq!(take(&t, utc("2026-06-03T14:00:00Z"), 3), 2);
    assert!(!t.has_room(0, utc("2026-06-03T14:59:59Z")));
    assert_eq!(t.remaining(0, utc("2026-06-03T14:30:00Z")).hourly, Some(0));
    assert!(t.has_room(0, utc("2026-06-03T15:00:00Z")));
    assert_eq!(take(&t, utc("2026-06-03T15:00:00Z"), 3), 2);
}

#[test]
fn hourly_windows_follow_half_hour_zones() {
    // Asia/Kolkata is UTC+05:30: local hours start at :30 UTC.
    let t = table(
        CapLimits {
            hourly: Some(1),
            ..CapLimits::UNCAPPED
        },
        chrono_tz::Asia::Kolkata,
    );
    assert_eq!(take(&t, utc("2026-06-03T10:00:00Z"), 2), 1);
    assert!(!t.has_room(0, utc("2026-06-03T10:29:00Z")));
    assert!(t.has_room(0, utc("2026-06-03T10:30:00Z")));
}

#[test]
fn daily_cap_rolls_over_at_local_midnight_not_utc() {
    let t = table(
        CapLimits {
            daily: Some(1),
            ..CapLimits::UNCAPPED
        },
        CHICAGO,
    );
    // 2026-06-02 18:00 CDT.
    assert_eq!(take(&t, utc("2026-06-02T23:00:00Z"), 2), 1);
    assert!(
        !t.has_room(0, utc("2026-06-03T00:00:00Z")),
        "UTC midnight is 19:00 in Chicago"
    );
    assert!(!t.has_room(0, utc("2026-06-03T04:59:59Z")), "23:59:59 CDT");
    assert!(t.has_room(0, utc("2026-06-03T05:00:00Z")), "00:00 CDT");
}

#[test]
fn weekly_cap_rolls_over_on_monday() {
    let t = table(
        CapLimits {
            weekly: Some(1),
            ..CapLimits::UNCAPPED
        },
        CHICAGO,
    );
    // Monday 2026-06-01 10:00 CDT.
    assert_eq!(take(&t, utc("2026-06-01T15:00:00Z"), 2), 1);
    assert!(
        !t.has_room(0, utc("2026-06-08T04:59:59Z")),
        "Sunday 23:59:59 CDT"
    );
    assert!(
        t.has_room(0, utc("2026-06-08T05:00:00Z")),
        "Monday 00:00 CDT"
    );
    assert_eq!(t.remaining(0, utc("2026-06-08T05:00:00Z")).weekly, Some(1));
}

#[test]
fn monthly_cap_rolls_over_on_the_first() {
    let t = table(
        CapLimits {
            monthly: Some(2),
            ..CapLimits::UNCAPPED
        },
        CHICAGO,
    );
    assert_eq!(take(&t, utc("2026-06-01T15:00:00Z"), 1), 1);
    assert_eq!(take(&t, utc("2026-06-30T15:00:00Z"), 2), 1);
    assert!(
        !t.has_room(0, utc("2026-07-01T04:59:59Z")),
        "June 30 23:59:59 CDT"
    );
    assert!(
        t.has_room(0, utc("2026-07-01T05:00:00Z")),
        "July 1 00:00 CDT"
    );
    // December to January crosses a year.
    let t = table(
        CapLimits {
            monthly: Some(1),
            ..CapLimits::UNCAPPED
        },
        CHICAGO,
    );
    assert_eq!(take(&t, utc("2026-12-31T12:00:00Z"), 2), 1);
    assert!(
        t.has_room(0, utc("2027-01-01T06:00:00Z")),
        "Jan 1 00:00 CST"
    );
}

#[test]
fn daily_window_on_the_short_spring_forward_day() {
    // 2026-03-08 in Chicago runs from 06:00 UTC (00:00 CST) to 05:00 UTC next day (00:00 CDT).
    let t = table(
        CapLimits {
            daily: Some(1),
            ..CapLimits::UNCAPPED
        },
        CHICAGO,
    );
    assert_eq!(take(&t, utc("2026-03-08T06:00:00Z"), 2), 1);
    assert!(!t.has_room(0, utc("2026-03-09T04:59:59Z")));
    assert!(t.has_room(0, utc("2026-03-09T05:00:00Z")));
}

#[test]
fn fall_back_repeated_hour_is_two_hourly_windows() {
    let t = table(
        CapLimits {
            hourly: Some(1),
            ..CapLimits::UNCAPPED
        },
        CHICAGO,
    );
    assert_eq!(take(&t, utc("2026-11-01T06:30:00Z"), 2), 1, "01:30 CDT");
    assert!(!t.has_room(0, utc("2026-11-01T06:59:59Z")));
    assert!(
        t.has_room(0, utc("2026-11-01T07:00:00Z")),
        "01:00 CST is a new hour"
    );
    // And the long day is still one day.
    let d = table(
        CapLimits {
            daily: Some(1),
            ..CapLimits::UNCAPPED
        },
        CHICAGO,
    );
    assert_eq!(take(&d, utc("2026-11-01T05:00:00Z"), 1), 1, "00:00 CDT");
    assert!(!d.has_room(0, utc("2026-11-02T05:59:59Z")), "23:59:59 CST");
    assert!(d.has_room(0, utc("2026-11-02T06:00:00Z")));
}

#[test]
fn daily_budget_in_cents() {
    let t = table(
        CapLimits {
            daily: Some(10),
            daily_budget_cents: Some(10_000),
            ..CapLimits::UNCAPPED
        },
        Tz::UTC,
    );
    let now = utc("2026-06-03T12:00:00Z");
    assert!(t.reserve(0, now, 6_000).is_some());
    assert!(t.reserve(0, now, 5_000).is_none(), "would pass the budget");
    // The refused lead's count was rolled back.
    assert_eq!(t.remaining(0, now).daily, Some(9));
    assert!(t.has_room(0, now));
    // Room for a lead, but not at any price.
    assert!(!t.has_room_for(0, now, 5_000));
    assert!(t.has_room_for(0, now, 4_000));
    // The floor applies to budgets only: 4,000 cents and 9 leads left.
    let clock = crate::caps::calendar::LocalClock::at(Tz::UTC, now);
    assert!(t.has_room_above(0, &clock, 4_000));
    assert!(!t.has_room_above(0, &clock, 4_001));
    assert!(t.has_room_at(0, &clock));
    assert!(t.reserve(0, now, 4_000).is_some());
    assert_eq!(t.remaining(0, now).daily_budget_cents, Some(0));
    assert!(!t.has_room(0, now), "spent budget");
    assert!(t.reserve(0, now, 1).is_none());
    assert!(
        t.reserve(0, utc("2026-06-04T00:00:00Z"), 10_000).is_some(),
        "new day, new budget"
    );
}

#[test]
fn weekly_and_monthly_budgets_follow_the_local_week_and_month() {
    let t = table(
        CapLimits {
            daily_budget_cents: Some(5_000),
            weekly_budget_cents: Some(8_000),
            monthly_budget_cents: Some(12_000),
            ..CapLimits::UNCAPPED
        },
        CHICAGO,
    );
    // Thursday 2026-06-25 and Friday 2026-06-26 (CDT): a new day, the same week.
    let thu = utc("2026-06-25T15:00:00Z");
    let fri = utc("2026-06-26T15:00:00Z");
    assert!(t.reserve(0, thu, 5_000).is_some());
    assert!(!t.has_room(0, thu), "the day's budget is spent");
    assert!(t.reserve(0, fri, 3_001).is_none(), "would pass the week's");
    let r = t.reserve(0, fri, 3_000).expect("the week has 3,000 left");
    let left = t.remaining(0, fri);
    assert_eq!(left.weekly_budget_cents, Some(0));
    assert_eq!(left.monthly_budget_cents, Some(4_000));
    assert!(!t.has_room(0, fri), "the week's budget is spent");
    // A post that fails gives every window its money back.
    t.release(r);
    let left = t.remaining(0, fri);
    assert_eq!(
        (
            left.daily_budget_cents,
            left.weekly_budget_cents,
            left.monthly_budget_cents
        ),
        (Some(5_000), Some(3_000), Some(7_000))
    );
    assert!(t.reserve(0, fri, 3_000).is_some());
    // Monday 2026-06-29: a new week, the same month, with 4,000 left of it.
    let mon = utc("2026-06-29T15:00:00Z");
    assert!(t.reserve(0, mon, 4_001).is_none(), "would pass the month's");
    assert!(t.reserve(0, mon, 4_000).is_some());
    assert!(!t.has_room(0, mon), "the month's budget is spent");
    // Wednesday 2026-07-01 00:30 CDT (05:30 UTC) is a new month, in the same week.
    let july = utc("2026-07-01T05:30:00Z");
    assert!(t.has_room(0, july));
    assert_eq!(t.remaining(0, july).monthly_budget_cents, Some(12_000));
    assert_eq!(t.remaining(0, july).weekly_budget_cents, Some(4_000));
}

#[test]
fn free_leads_do_not_touch_the_budget() {
    let t = table(
        CapLimits {
            daily_budget_cents: Some(100),
            ..CapLimits::UNCAPPED
        },
        Tz::UTC,
    );
    let now = utc("2026-06-03T12:00:00Z");
    assert!(t.reserve(0, now, 100).is_some());
    assert!(t.reserve(0, now, 0).is_some());
    assert!(
        t.reserve(0, now, -1).is_none(),
        "negative prices are refused"
    );
    assert!(t.reserve(0, now, MAX_CENTS + 1).is_none());
}

#[test]
fn release_gives_the_lead_back() {
    let t = table(
        CapLimits {
            hourly: Some(1),
            daily_budget_cents: Some(500),
            ..CapLimits::UNCAPPED
        },
        Tz::UTC,
    );
    let now = utc("2026-06-03T12:00:00Z");
    let r = t.reserve(0, now, 500).unwrap();
    assert_eq!(r.buyer(), 0);
    assert!(!t.has_room(0, now));
    t.release(r);
    assert!(t.has_room(0, now));
    assert_eq!(
        t.remaining(0, now),
        CapsLeft {
            hourly: Some(1),
            daily_budget_cents: Some(500),
            ..CapsLeft::default()
        }
    );
}

#[test]
fn release_after_rollover_leaves_the_new_window_alone() {
    let t = table(
        CapLimits {
            hourly: Some(1),
            daily: Some(5),
            ..CapLimits::UNCAPPED
        },
        Tz::UTC,
    );
    let old = t.reserve(0, utc("2026-06-03T12:59:00Z"), 100).unwrap();
    let new = t.reserve(0, utc("2026-06-03T13:00:00Z"), 100);
    assert!(new.is_some());
    t.release(old);
    let now = utc("2026-06-03T13:01:00Z");
    assert_eq!(
        t.remaining(0, now).hourly,
        Some(0),
        "the 13:00 lead still counts"
    );
    assert_eq!(
        t.remaining(0, now).daily,
        Some(4),
        "the released lead left the day"
    );
}

#[test]
fn a_lagging_clock_counts_into_its_own_window_and_leaves_the_newer_alone() {
    let t = table(
        CapLimits {
            hourly: Some(1),
            ..CapLimits::UNCAPPED
        },
        Tz::UTC,
    );
    assert!(t.reserve(0, utc("2026-06-03T13:00:00Z"), 100).is_some());
    // A worker whose clock still reads 12:59 sells into the 12:00 hour, as the journal's
    // replay counts that lead, and does not reset the 13:00 window.
    assert!(t.reserve(0, utc("2026-06-03T12:59:59Z"), 100).is_some());
    assert!(t.reserve(0, utc("2026-06-03T12:59:59Z"), 100).is_none());
    assert!(t.reserve(0, utc("2026-06-03T13:00:01Z"), 100).is_none());
    assert_eq!(t.remaining(0, utc("2026-06-03T13:01:00Z")).hourly, Some(0));
    assert_eq!(count(&t, 0, HOUR), 2);
}

/// A wall clock that ran into the next day and was stepped back: the day it is back in keeps
/// its own count, and the next day keeps the leads sold while the clock was ahead, as a
/// restart's replay of the journal counts them.
#[test]
fn a_clock_stepped_back_across_midnight_counts_the_day_it_is_back_in() {
    let limits = CapLimits {
        daily: Some(5),
        daily_budget_cents: Some(1_000),
        ..CapLimits::UNCAPPED
    };
    let t = table(limits, Tz::UTC);
    let sales = [
        ("2026-06-03T23:59:00Z", 3),
        // The clock runs ahead, into June 4th.
        ("2026-06-04T00:00:30Z", 2),
        // Stepped back to June 3rd: two more fit that day, not three.
        ("2026-06-03T23:59:10Z", 2),
    ];
    for (at, n) in sales {
        assert_eq!(take(&t, utc(at), n), n, "{n} at {at}");
    }
    assert!(t.reserve(0, utc("2026-06-03T23:59:20Z"), 100).is_none());
    let june_3 = utc("2026-06-03T23:59:30Z");
    let june_4 = utc("2026-06-04T00:01:00Z");
    assert_eq!(t.remaining(0, june_3).daily, Some(0));
    assert_eq!(t.remaining(0, june_4).daily, Some(3));
    assert_eq!(t.remaining(0, june_4).daily_budget_cents, Some(800));

    // What a restart rebuilds from the journal at either moment.
    for now in [june_3, june_4] {
        let replayed = table(limits, Tz::UTC);
        for (at, n) in sales {
            for _ in 0..n {
                replayed.replay_sale(0, utc(at), 100, now);
            }
        }
        assert_eq!(replayed.remaining(0, now), t.remaining(0, now), "at {now}");
    }
}

/// Stepped back by two windows or more, the counter of the window it is back in holds a later
/// window: leads count there, turning the buyer away early rather than past a cap.
#[test]
fn a_clock_stepped_back_two_hours_errs_toward_refusing() {
    let t = table(
        CapLimits {
            hourly: Some(3),
            ..CapLimits::UNCAPPED
        },
        Tz::UTC,
    );
    assert_eq!(take(&t, utc("2026-06-03T12:10:00Z"), 1), 1);
    assert_eq!(take(&t, utc("2026-06-03T14:10:00Z"), 2), 2);
    // Back at 12:20: the 12:00 hour's counter now holds 14:00, with 2 of 3.
    assert_eq!(take(&t, utc("2026-06-03T12:20:00Z"), 3), 1);
    assert_eq!(t.remaining(0, utc("2026-06-03T14:20:00Z")).hourly, Some(0));
}

/// A start while the wall clock is behind the journal (a clock stepped back, a host whose clock
/// is wrong): sales stamped ahead of it are not over, they count in their own windows once the
/// clock gets there, so the buyer is never sold past a cap when it does.
#[test]
fn a_start_behind_the_journal_counts_its_later_sales_when_the_clock_gets_there() {
    let limits = CapLimits {
        hourly: Some(5),
        daily: Some(8),
        daily_budget_cents: Some(4_001),
        ..CapLimits::UNCAPPED
    };
    let t = table(limits, Tz::UTC);
    let start = utc("2026-06-03T23:44:00Z");
    for _ in 0..3 {
        t.replay_sale(0, utc("2026-06-04T00:44:00Z"), 555, start);
    }
    // The hour and day the clock is in have sold nothing.
    assert_eq!(t.remaining(0, start).hourly, Some(5));
    assert_eq!(t.remaining(0, start).daily, Some(8));
    assert_eq!(take(&t, utc("2026-06-03T23:45:00Z"), 2), 2);
    let later = utc("2026-06-04T00:50:00Z");
    let left = t.remaining(0, later);
    assert_eq!(left.hourly, Some(2));
    assert_eq!(left.daily, Some(5));
    assert_eq!(left.daily_budget_cents, Some(4_001 - 3 * 555));
    assert_eq!(take(&t, later, 6), 2);
}

/// The same two hours or more ahead, where the later hour shares its counter with the hour
/// the clock is in: both read the count of both, turning the buyer away early, never past a
/// cap, whichever order the journal holds them in.
#[test]
fn a_start_two_hours_behind_the_journal_errs_toward_refusing() {
    let limits = CapLimits {
        hourly: Some(5),
        ..CapLimits::UNCAPPED
    };
    let start = utc("2026-06-03T22:44:00Z");
    let later = utc("2026-06-04T00:50:00Z");
    let ahead = [("2026-06-04T00:44:00Z", 3)];
    let now_then_ahead = [("2026-06-03T22:10:00Z", 1), ("2026-06-04T00:44:00Z", 3)];
    for sales in [&ahead[..], &now_then_ahead[..]] {
        let t = table(limits, Tz::UTC);
        for &(at, n) in sales {
            for _ in 0..n {
                t.replay_sale(0, utc(at), 100, start);
            }
        }
        let sold_now = take(&t, utc("2026-06-03T22:45:00Z"), 6);
        let sold_at_00 = 3 + take(&t, later, 6);
        assert!(sold_at_00 <= 5, "{sales:?}: {sold_at_00} in the 00:00 hour");
        let in_22 = sales
            .iter()
            .filter(|s| s.0.contains("T22"))
            .map(|s| s.1)
            .sum::<usize>();
        assert!(in_22 + sold_now <= 5, "{sales:?}: {sold_now} more at 22:45");
    }
}

#[test]
fn replay_counts_only_windows_still_open() {
    let limits = CapLimits {
        hourly: Some(10),
        daily: Some(10),
        weekly: Some(10),
        monthly: Some(10),
        daily_budget_cents: Some(100_000),
        weekly_budget_cents: Some(200_000),
        monthly_budget_cents: Some(300_000),
    };
    let t = table(limits, CHICAGO);
    let now = utc("2026-06-10T15:30:00Z"); // Wednesday 10:30 CDT
    t.replay_sale(0, utc("2026-06-10T15:05:00Z"), 2_500, now); // this hour
    t.replay_sale(0, utc("2026-06-10T13:00:00Z"), 1_000, now); // earlier today
    t.replay_sale(0, utc("2026-06-08T15:00:00Z"), 1_000, now); // this Monday
    t.replay_sale(0, utc("2026-06-03T15:00:00Z"), 1_000, now); // last week, same month
    t.replay_sale(0, utc("2026-05-20T15:00:00Z"), 1_000, now); // last month
    assert_eq!(
        t.remaining(0, now),
        CapsLeft {
            paused: false,
            hourly: Some(9),
            daily: Some(8),
            weekly: Some(7),
            monthly: Some(6),
            daily_budget_cents: Some(100_000 - 3_500),
            weekly_budget_cents: Some(200_000 - 4_500),
            monthly_budget_cents: Some(300_000 - 5_500),
        }
    );
}

#[test]
fn replay_can_leave_a_buyer_over_a_lowered_cap() {
    let t = table(
        CapLimits {
            daily: Some(1),
            ..CapLimits::UNCAPPED
        },
        Tz::UTC,
    );
    let now = utc("2026-06-03T15:30:00Z");
    for _ in 0..3 {
        t.replay_sale(0, now, 100, now);
    }
    assert_eq!(t.remaining(0, now).daily, Some(0));
    assert!(!t.has_room(0, now));
    assert!(t.reserve(0, now, 100).is_none());
}

#[test]
fn paused_buyers_have_no_room_and_keep_their_counts() {
    let t = table(
        CapLimits {
            daily: Some(5),
            ..CapLimits::UNCAPPED
        },
        Tz::UTC,
    );
    let now = utc("2026-06-03T12:00:00Z");
    assert_eq!(take(&t, now, 2), 2);
    t.pause(0);
    assert!(t.is_paused(0));
    assert!(!t.has_room(0, now));
    assert!(t.reserve(0, now, 100).is_none());
    assert!(t.remaining(0, now).paused);
    t.resume(0);
    assert!(!t.is_paused(0));
    assert!(t.has_room(0, now));
    assert_eq!(t.remaining(0, now).daily, Some(3));
}

#[test]
fn unknown_buyers_are_never_eligible() {
    let t = table(CapLimits::UNCAPPED, Tz::UTC);
    let now = utc("2026-06-03T12:00:00Z");
    assert!(!t.has_room(7, now));
    assert!(t.reserve(7, now, 100).is_none());
    assert!(!t.is_paused(7));
    assert_eq!(t.remaining(7, now).daily, Some(0));
    t.pause(7);
    t.replay_sale(7, now, 1, now);
    assert_eq!(t.len(), 1);
    assert_eq!(t.tz(7), None);
}

#[test]
fn caps_from_config() {
    let cfg: CapsConfig = toml::from_str(
        "hourly = 50\ndaily = 500\nweekly = 2000\nmonthly = 6000\ndaily_budget = 15000.00\n\
         weekly_budget = 60000\nmonthly_budget = 200000.50",
    )
    .unwrap();
    assert_eq!(
        CapLimits::from_config(Some(&cfg)).unwrap(),
        CapLimits {
            hourly: Some(50),
            daily: Some(500),
            weekly: Some(2000),
            monthly: Some(6000),
            daily_budget_cents: Some(1_500_000),
            weekly_budget_cents: Some(6_000_000),
            monthly_budget_cents: Some(20_000_050),
        }
    );
    assert_eq!(CapLimits::from_config(None).unwrap(), CapLimits::UNCAPPED);
    let too_big = CapsConfig {
        daily: Some(MAX_CAP_COUNT + 1),
        ..CapsConfig::default()
    };
    let e = CapLimits::from_config(Some(&too_big)).unwrap_err();
    assert_eq!(e.key(), "daily");
    let negative = CapsConfig {
        daily_budget: Some(-1.0),
        ..CapsConfig::default()
    };
    assert_eq!(
        CapLimits::from_config(Some(&negative)).unwrap_err().key(),
        "daily_budget"
    );
    let huge = CapsConfig {
        monthly_budget: Some(1e12),
        ..CapsConfig::default()
    };
    let e = CapLimits::from_config(Some(&huge)).unwrap_err();
    assert_eq!(e.key(), "monthly_budget");
    assert!(e.to_string().starts_with("monthly_budget: "), "{e}");
}

#[test]
fn carried_over_keys_state_by_id_and_applies_new_limits() {
    let daily = |n| CapLimits {
        daily: Some(n),
        ..CapLimits::UNCAPPED
    };
    let now = utc("2026-06-03T12:00:00Z");
    // Old config: buyers a (index 0) and b (index 1), both capped at 5 a day.
    let old = CapTable::new(&[(daily(5), Tz::UTC), (daily(5), Tz::UTC)]);
    for _ in 0..5 {
        assert!(old.reserve(1, now, 100).is_some());
    }
    assert!(old.reserve(0, now, 100).is_some());
    old.pause(0);
    // New config: b first (same cap, still full), then a (cap lowered), then a new buyer c.
    let (same, how) = CapTable::carried_over(
        &[
            (daily(5), Tz::UTC),
            (daily(1), Tz::UTC),
            (daily(5), Tz::UTC),
        ],
        &old,
        &[Some(1), Some(0), None],
    );
    assert_eq!(how, vec![Carried::Shared, Carried::Shared, Carried::Added]);
    assert!(!same.has_room(0, now), "b stays at its cap");
    assert_eq!(same.remaining(0, now).daily, Some(0));
    assert!(same.is_paused(1), "a stays paused");
    assert_eq!(
        same.remaining(1, now).daily,
        Some(0),
        "a's lowered cap applies to its count"
    );
    assert_eq!(same.remaining(2, now).daily, Some(5), "c starts empty");
    assert!(!same.is_paused(2));
    // Raising b's cap gives it room at once, on the carried count.
    let (raised, _) = CapTable::carried_over(&[(daily(8), Tz::UTC)], &old, &[Some(1)]);
    assert_eq!(raised.remaining(0, now).daily, Some(3));
    // The tables share the counters: a sale through the old table (a lead still running under
    // the old config) counts in the new one, and a release gives the room back to both.
    let r = raised
        .reserve(0, now, 100)
        .expect("room under the raised cap");
    assert_eq!(old.remaining(1, now).daily, Some(0));
    raised.release(r);
    assert_eq!(raised.remaining(0, now).daily, Some(3));
    // Pausing through the new table pauses the buyer for leads of the old one too.
    raised.pause(0);
    assert!(old.is_paused(1));
    // Another zone: window ids mean other hours, so counts start over; pause is kept.
    let (moved, how) = CapTable::carried_over(&[(daily(5), CHICAGO)], &old, &[Some(0)]);
    assert_eq!(how, vec![Carried::ZoneChanged]);
    assert!(moved.is_paused(0));
    moved.resume(0);
    assert!(
        old.is_paused(0),
        "a zone change does not share the pause flag"
    );
    assert_eq!(moved.remaining(0, now).daily, Some(5));
    // Same zone, but ids added to or taken from its `previous_ids`: counts start over too, to
    // be rebuilt from the journal with the sales under the ids it answers to; pause is kept,
    // not shared.
    let (grown, how) =
        CapTable::carried_over_changed(&[(daily(5), Tz::UTC)], &old, &[Some(0)], &[true]);
    assert_eq!(how, vec![Carried::HistoryChanged]);
    assert!(grown.is_paused(0));
    assert!(!grown.shares_state(0, &old, 0));
    assert_eq!(grown.remaining(0, now).daily, Some(5));
    let (kept, how) =
        CapTable::carried_over_changed(&[(daily(5), Tz::UTC)], &old, &[Some(0)], &[false]);
    assert_eq!(how, vec![Carried::Shared]);
    assert!(kept.shares_state(0, &old, 0));
}

/// Many threads reserving and releasing against the same caps: no interleaving may ever count
/// past a cap, and once everyone is done the counts are exactly the reservations still held.
#[test]
fn concurrent_reserve_and_release_never_overshoot() {
    const THREADS: usize = 4;
    const OPS_PER_THREAD: usize = 500_000;
    const HOLD_MAX: usize = 40;
    const KEEP: usize = 7;
    let limits = CapLimits {
        hourly: Some(100),
        daily: Some(64),
        daily_budget_cents: Some(6_000),
        ..CapLimits::UNCAPPED
    };
    let t = Arc::new(CapTable::new(&[(limits, CHICAGO)]));
    let now = utc("2026-06-03T15:30:00Z");
    let clock = LocalClock::at(CHICAGO, now);
    let granted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let (t, granted, refused) =
                (Arc::clone(&t), Arc::clone(&granted), Arc::clone(&refused));
            std::thread::spawn(move || {
                let mut held = Vec::with_capacity(HOLD_MAX);
                let mut rng: u64 = 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1);
                let (mut ok, mut no) = (0, 0);
                for op in 0..OPS_PER_THREAD {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let price = 50 + (rng % 100) as i64;
                    if held.len() < HOLD_MAX && rng % 3 != 0 {
                        // Mostly the precomputed clock, sometimes the full path.
                        let r = if op % 64 == 0 {
                            t.reserve(0, now, price)
                        } else {
                            t.reserve_at(0, &clock, price)
                        };
                        match r {
                            Some(r) => {
                                ok += 1;
                                held.push(r);
                                assert!(count(&t, 0, HOUR) <= 100);
                                assert!(count(&t, 0, DAY) <= 64);
                                assert!(count(&t, 0, DAY_BUDGET) <= 6_000);
                            }
                            None => no += 1,
                        }
                    } else if let Some(r) = held.pop() {
                        t.release(r);
                    }
                }
                while held.len() > KEEP {
                    if let Some(r) = held.pop() {
                        t.release(r);
                    }
                }
                granted.fetch_add(ok, Ordering::Relaxed);
                refused.fetch_add(no, Ordering::Relaxed);
                held
            })
        })
        .collect();
    let kept: Vec<Reservation> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let kept_cents: u64 = kept.iter().map(|r| u64::from(r.amounts[DAY_BUDGET])).sum();
    assert_eq!(count(&t, 0, DAY), kept.len() as u64);
    assert_eq!(count(&t, 0, HOUR), kept.len() as u64);
    assert_eq!(count(&t, 0, DAY_BUDGET), kept_cents);
    assert!(
        granted.load(Ordering::Relaxed) > 1000,
        "the caps were exercised"
    );
    assert!(refused.load(Ordering::Relaxed) > 0, "the caps were reached");
    for r in kept {
        t.release(r);
    }
    assert_eq!(
        t.remaining(0, now),
        CapsLeft {
            hourly: Some(100),
            daily: Some(64),
            daily_budget_cents: Some(6_000),
            ..CapsLeft::default()
        }
    );
}

/// Exactly `cap` reservations succeed out of many more attempts from racing threads.
#[test]
fn racing_threads_sell_exactly_the_cap() {
    const THREADS: usize = 4;
    const CAP: u64 = 5_000;
    let t = Arc::new(table(
        CapLimits {
            daily: Some(CAP),
            ..CapLimits::UNCAPPED
        },
        Tz::UTC,
    ));
    let now = utc("2026-06-03T12:00:00Z");
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                let clock = LocalClock::at(Tz::UTC, now);
                (0..CAP)
                    .filter_map(|_| t.reserve_at(0, &clock, 100))
                    .count()
            })
        })
        .collect();
    let sold: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sold as u64, CAP);
    assert_eq!(t.remaining(0, now).daily, Some(0));
}

#[test]
fn a_cap_added_by_a_reload_counts_the_sales_made_while_uncapped() {
    let now = utc("2026-06-03T12:00:00Z");
    let old = table(CapLimits::UNCAPPED, CHICAGO);
    assert_eq!(take(&old, now, 8), 8);
    let capped = CapLimits {
        daily: Some(5),
        daily_budget_cents: Some(1_000),
        ..CapLimits::UNCAPPED
    };
    let (new, how) = CapTable::carried_over(&[(capped, CHICAGO)], &old, &[Some(0)]);
    assert_eq!(how, vec![Carried::Shared]);
    let left = new.remaining(0, now);
    assert_eq!(left.daily, Some(0), "8 sold today against a new cap of 5");
    assert_eq!(
        left.daily_budget_cents,
        Some(200),
        "$8 spent of a new $10 budget"
    );
    assert!(!new.has_room(0, now));
    assert_eq!(take(&new, now, 1), 0);
}

#[test]
fn replay_counts_uncapped_windows_for_caps_added_later() {
    let now = utc("2026-06-03T12:30:00Z");
    let old = table(CapLimits::UNCAPPED, Tz::UTC);
    for _ in 0..3 {
        old.replay_sale(0, utc("2026-06-03T12:10:00Z"), 2_500, now);
    }
    let capped = CapLimits {
        hourly: Some(3),
        weekly_budget_cents: Some(10_000),
        ..CapLimits::UNCAPPED
    };
    let (new, _) = CapTable::carried_over(&[(capped, Tz::UTC)], &old, &[Some(0)]);
    let left = new.remaining(0, now);
    assert_eq!(left.hourly, Some(0));
    assert_eq!(left.weekly_budget_cents, Some(2_500));
}

#[test]
fn an_uncapped_budget_past_what_a_counter_holds_never_refuses() {
    let now = utc("2026-06-03T12:00:00Z");
    let t = table(CapLimits::UNCAPPED, Tz::UTC);
    // $10 million a lead: five of them pass what a 32-bit budget counter holds.
    let n = (0..6).filter_map(|_| t.reserve(0, now, MAX_CENTS)).count();
    assert_eq!(n, 6);
    assert_eq!(count(&t, 0, DAY_BUDGET), COUNT_MASK);
}

/// Posts and sales of leads still running when a reload rebuilt a buyer's counters: counted
/// at once, and settled when each post ends: a sale the rebuild saw is not counted again, one
/// it did not see is, and a post it counted that did not sell gives its room back.
#[test]
fn running_posts_are_counted_once_and_settled_when_they_end() {
    let t = table(
        CapLimits {
            daily: Some(5),
            daily_budget_cents: Some(10_000),
            ..CapLimits::UNCAPPED
        },
        Tz::UTC,
    );
    let now = utc("2026-06-03T15:30:00Z");
    t.replay_running(0, "sold-seen", now, 1_000, true, now);
    t.replay_running(0, "in-flight-sells", now, 1_000, false, now);
    t.replay_running(0, "in-flight-fails", now, 1_000, false, now);
    assert_eq!(t.remaining(0, now).daily, Some(2));
    assert_eq!(t.remaining(0, now).daily_budget_cents, Some(7_000));

    t.settle_earlier(0, "sold-seen", true, 1_000, now);
    t.settle_earlier(0, "in-flight-sells", true, 1_000, now);
    assert_eq!(t.remaining(0, now).daily, Some(2), "counted once each");
    t.settle_earlier(0, "in-flight-fails", false, 0, now);
    assert_eq!(
        t.remaining(0, now).daily,
        Some(3),
        "the failed post's room is back"
    );
    assert_eq!(t.remaining(0, now).daily_budget_cents, Some(8_000));
    // A sale the rebuild never saw (its post was sent after) counts when it ends; a post
    // it never saw that fails changes nothing; settling twice changes nothing.
    t.settle_earlier(0, "unseen", true, 500, now);
    t.settle_earlier(0, "unseen-fails", false, 0, now);
    t.settle_earlier(0, "in-flight-fails", false, 0, now);
    assert_eq!(t.remaining(0, now).daily, Some(2));
    assert_eq!(t.remaining(0, now).daily_budget_cents, Some(7_500));
}
