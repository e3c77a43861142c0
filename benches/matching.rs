//! Matching a lead against a campaign of 500 buyers, and cap reservation, as the hot path sees them.
//!
//! Run: `cargo bench --bench matching -- --warm-up-time 1 --measurement-time 3`

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gavel::caps::{CapLimits, CapTable};
use gavel::config::types::FiltersConfig;
use gavel::eligibility::{BuyerRules, CampaignRules, Filters, Matcher, Schedule};
use gavel::lead::Fields;
use serde_json::{json, Value};

const BUYERS: usize = 500;
const STATES: [&str; 12] = [
    "TX", "CA", "NY", "FL", "OK", "LA", "AZ", "NV", "IL", "GA", "OH", "PA",
];
const ZONES: [&str; 4] = [
    "America/Chicago",
    "America/New_York",
    "America/Denver",
    "America/Los_Angeles",
];

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn buyers() -> Vec<BuyerRules> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..BUYERS)
        .map(|i| {
            let states: Vec<String> = (0..1 + rng.below(5))
                .map(|_| format!("{:?}", STATES[rng.below(STATES.len())]))
                .collect();
            let zips: Vec<String> = (0..rng.below(4))
                .map(|_| format!("\"7{}\"", rng.below(10)))
                .collect();
            let mut fields = vec![
                format!(
                    "{{ field = \"age\", op = \">=\", value = {} }}",
                    18 + rng.below(10)
                ),
                "{ field = \"insured\", op = \"==\", value = true }".to_string(),
            ];
            if rng.below(2) == 0 {
                fields.push(
                    "{ field = \"lead_type\", op = \"in\", value = [\"auto\", \"home\"] }"
                        .to_string(),
                );
            }
            // No zip prefixes: the key left out (an empty list is refused), any zip.
            let zips = if zips.is_empty() {
                String::new()
            } else {
                format!("zip_prefixes = [{}]\n", zips.join(","))
            };
            let text = format!(
                "states = [{}]\n{zips}fields = [{}]",
                states.join(","),
                fields.join(",")
            );
            let cfg: FiltersConfig = toml::from_str(&text).expect("bench filters parse");
            let hours: Vec<String> = match rng.below(3) {
                0 => vec![],
                1 => vec!["mon-fri 08:00-20:00".into(), "sat 09:00-14:00".into()],
                _ => vec!["daily 06:00-23:00".into()],
            };
            BuyerRules {
                campaigns: vec!["auto-insurance".into()],
                verticals: vec!["auto_insurance".into()],
                filters: Filters::compile(&cfg).expect("bench filters compile"),
                schedule: Schedule::parse(Some(ZONES[i % ZONES.len()]), &hours)
                    .expect("bench hours"),
            }
        })
        .collect()
}

fn lead(state: &str) -> Fields {
    match json!({"first_name": "Ana", "last_name": "Diaz", "email": "ana@example.com", "phone": "7135550147",
                 "street": "12 Main St", "city": "Houston", "state": state, "zip": "77002",
                 "lead_type": "auto", "age": 34, "insured": true})
    {
        Value::Object(m) => Fields::from_map(&m),
        _ => Fields::default(),
    }
}

fn now() -> DateTime<Utc> {
    // Wednesday 2026-11-25, 11:59 in Chicago: most buyers are open.
    DateTime::parse_from_rfc3339("2026-11-25T17:59:01Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn matching(c: &mut Criterion) {
    let buyers = buyers();
    let campaigns = [CampaignRules {
        id: "auto-insurance".into(),
        vertical: "auto_insurance".into(),
        min_price_cents: 1,
    }];
    let matcher = Matcher::new(&campaigns, &buyers);
    let limits = CapLimits {
        hourly: Some(1_000_000),
        daily: Some(1_000_000),
        ..CapLimits::UNCAPPED
    };
    let rows: Vec<(CapLimits, Tz)> = buyers.iter().map(|b| (limits, b.schedule.tz())).collect();
    let caps = CapTable::new(&rows);
    let now = now();
    let mut out = Vec::with_capacity(BUYERS);

    let tx = lead("TX");
    matcher.eligible(0, &tx, Some("auto_insurance"), now, &caps, &mut out);
    println!("TX lead: {} of {BUYERS} buyers eligible", out.len());
    c.bench_function("eligible/500_buyers/tx_lead", |b| {
        b.iter(|| {
            matcher.eligible(
                0,
                black_box(&tx),
                Some("auto_insurance"),
                black_box(now),
                &caps,
                &mut out,
            )
        })
    });
    let wy = lead("WY");
    c.bench_function("eligible/500_buyers/unlisted_state", |b| {
        b.iter(|| {
            matcher.eligible(
                0,
                black_box(&wy),
                Some("auto_insurance"),
                black_box(now),
                &caps,
                &mut out,
            )
        })
    });
    c.bench_function("eligible/500_buyers/naive_scan", |b| {
        b.iter(|| {
            out.clear();
            for (i, buyer) in buyers.iter().enumerate() {
                if buyer.filters.matches(black_box(&tx))
                    && buyer.schedule.is_open(now)
                    && caps.has_room(i, now)
                {
                    out.push(i);
                }
            }
        })
    });

    let one = CapTable::new(&[(
        CapLimits {
            hourly: Some(50),
            daily: Some(500),
            weekly: Some(2000),
            monthly: Some(6000),
            daily_budget_cents: Some(1_500_000),
            weekly_budget_cents: Some(6_000_000),
            monthly_budget_cents: Some(20_000_000),
        },
        chrono_tz::America::Chicago,
    )]);
    c.bench_function("caps/reserve_release/all_windows", |b| {
        b.iter(|| {
            if let Some(r) = one.reserve(0, black_box(now), 4_250) {
                one.release(r);
            }
        })
    });
    c.bench_function("caps/has_room", |b| {
        b.iter(|| one.has_room(0, black_box(now)))
    });
}

criterion_group!(benches, matching);
criterion_main!(benches);
