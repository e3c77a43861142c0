use super::*;
use crate::caps::CapLimits;
use crate::config::types::FiltersConfig;
use crate::test_rng::Rng;
use serde_json::{json, Value};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn lead(v: Value) -> Fields {
    match v {
        Value::Object(m) => Fields::from_map(&m),
        _ => panic!("test lead must be an object"),
    }
}

fn filters(toml_text: &str) -> Filters {
    let cfg: FiltersConfig = toml::from_str(toml_text).unwrap();
    Filters::compile(&cfg).unwrap()
}

fn buyer(
    campaigns: &[&str],
    verticals: &[&str],
    filters_toml: &str,
    tz: Option<&str>,
    hours: &[&str],
) -> BuyerRules {
    let hours: Vec<String> = hours.iter().map(|s| s.to_string()).collect();
    BuyerRules {
        campaigns: campaigns.iter().map(|s| s.to_string()).collect(),
        verticals: verticals.iter().map(|s| s.to_string()).collect(),
        filters: filters(filters_toml),
        schedule: Schedule::parse(tz, &hours).unwrap(),
    }
}

fn campaigns() -> Vec<CampaignRules> {
    vec![
        CampaignRules {
            id: "auto-insurance".into(),
            vertical: "auto_insurance".into(),
            min_price_cents: 1,
        },
        CampaignRules {
            id: "solar".into(),
            vertical: "solar".into(),
            min_price_cents: 1,
        },
    ]
}

fn uncapped(buyers: &[BuyerRules]) -> CapTable {
    let rows: Vec<(CapLimits, Tz)> = buyers
        .iter()
        .map(|b| (CapLimits::UNCAPPED, b.schedule.tz()))
        .collect();
    CapTable::new(&rows)
}

fn eligible(
    m: &Matcher,
    campaign: usize,
    l: &Fields,
    v: Option<&str>,
    now: &str,
    caps: &CapTable,
) -> Vec<usize> {
    let mut out = vec![999];
    m.eligible(campaign, l, v, utc(now), caps, &mut out);
    out
}

/// The example config's buyers, as the index sees them.
fn example() -> Vec<BuyerRules> {
    vec![
        buyer(
            &["auto-insurance"],
            &["auto_insurance"],
            r#"states = ["TX", "OK", "LA"]
               zip_prefixes = ["770", "750"]
               fields = [ { field = "age", op = ">=", value = 21 }, { field = "insured", op = "==", value = true } ]"#,
            Some("America/Chicago"),
            &["mon-fri 08:00-20:00", "sat 09:00-14:00"],
        ),
        buyer(&["auto-insurance"], &["auto_insurance"], "", None, &[]),
        buyer(&["auto-insurance"], &["auto_insurance"], "", None, &[]),
        buyer(
            &["solar"],
            &["solar"],
            r#"states = ["CA", "AZ", "NV", "TX"]
               fields = [ { field = "monthly_bill", op = ">=", value = 100 } ]"#,
            None,
            &[],
        ),
        buyer(&["auto-insurance"], &["auto_insurance"], "", None, &[]),
    ]
}

// Wednesday 2026-11-25 11:59 CST.
const OPEN: &str = "2026-11-25T17:59:01Z";

#[test]
fn example_lead_reaches_every_matching_buyer_in_config_order() {
    let buyers = example();
    let m = Matcher::new(&campaigns(), &buyers);
    let caps = uncapped(&buyers);
    let l = lead(
        json!({"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}),
    );
    assert_eq!(
        eligible(&m, 0, &l, Some("auto_insurance"), OPEN, &caps),
        vec![0, 1, 2, 4]
    );
    assert_eq!(eligible(&m, 0, &l, None, OPEN, &caps), vec![0, 1, 2, 4]);
    assert_eq!(m.campaign_buyers(0).collect::<Vec<_>>(), vec![0, 1, 2, 4]);
    assert_eq!(m.campaign_buyers(1).collect::<Vec<_>>(), vec![3]);
    assert_eq!(m.campaign_count(), 2);
}

/// A dotted filter on a nested string with escapes matches its decoded text in the index too,
/// next to a plain nested field read once per lead.
#[test]
fn the_index_compares_nested_strings_decoded() {
    let buyers = vec![
        buyer(
            &["auto-insurance"],
            &[],
            r#"fields = [ { field = "home.note", op = "==", value = 'a "quoted" word' },
                         { field = "home.city", op = "==", value = "Houston" } ]"#,
            None,
            &[],
        ),
        buyer(
            &["auto-insurance"],
            &[],
            r#"fields = [ { field = "home.note", op = "==", value = 'a \"quoted\" word' } ]"#,
            None,
            &[],
        ),
    ];
    let m = Matcher::new(&campaigns(), &buyers);
    let caps = uncapped(&buyers);
    let l =
        Fields::from_json(r#"{"home": {"note": "a \"quoted\" word", "city": "Houston"}}"#).unwrap();
    assert_eq!(eligible(&m, 0, &l, None, OPEN, &caps), vec![0]);
}

#[test]
fn a_lead_from_another_state_never_reaches_a_state_filtered_buyer() {
    let buyers = example();
    let m = Matcher::new(&campaigns(), &buyers);
    let caps = uncapped(&buyers);
    for state in [
        json!("CA"),
        json!("ca"),
        json!("Texas"),
        json!(null),
        json!(48),
    ] {
        let l = lead(json!({"state": state, "zip": "77002", "age": 34, "insured": true}));
        assert_eq!(
            eligible(&m, 0, &l, None, OPEN, &caps),
            vec![1, 2, 4],
            "state {state}"
        );
    }
    let no_state = lead(json!({"zip": "77002", "age": 34, "insured": true}));
    assert_eq!(eligible(&m, 0, &no_state, None, OPEN, &caps), vec![1, 2, 4]);
    assert_eq!(
        m.explain(0, 0, &no_state, None, utc(OPEN), &caps),
        Err(Skip::Filter(FilterMiss::State))
    );
}

#[test]
fn filters_vertical_and_hours_each_exclude() {
    let buyers = example();
    let m = Matcher::new(&campaigns(), &buyers);
    let caps = uncapped(&buyers);
    let good = json!({"state": "tx", "zip": 77002, "age": "34", "insured": true});
    let now = utc(OPEN);
    let explain =
        |l: &Fields, v: Option<&str>, when: DateTime<Utc>| m.explain(0, 0, l, v, when, &caps);
    assert_eq!(explain(&lead(good.clone()), None, now), Ok(()));

    let mut young = lead(good.clone());
    young.insert("age".into(), json!(20));
    assert_eq!(eligible(&m, 0, &young, None, OPEN, &caps), vec![1, 2, 4]);
    assert_eq!(
        explain(&young, None, now),
        Err(Skip::Filter(FilterMiss::Field(0)))
    );

    let mut far = lead(good.clone());
    far.insert("zip".into(), json!("78701"));
    assert_eq!(explain(&far, None, now), Err(Skip::Filter(FilterMiss::Zip)));

    // A consent for another vertical excludes every buyer restricted to auto_insurance.
    assert_eq!(
        eligible(&m, 0, &lead(good.clone()), Some("solar"), OPEN, &caps),
        Vec::<usize>::new()
    );
    assert_eq!(
        explain(&lead(good.clone()), Some("solar"), now),
        Err(Skip::Vertical)
    );

    // Sunday: buyer 0 is closed.
    let sunday = "2026-11-29T18:00:00Z";
    assert_eq!(
        eligible(&m, 0, &lead(good.clone()), None, sunday, &caps),
        vec![1, 2, 4]
    );
    assert_eq!(
        explain(&lead(good.clone()), None, utc(sunday)),
        Err(Skip::Closed)
    );

    // Not in the campaign.
    assert_eq!(
        m.explain(1, 0, &lead(good.clone()), None, now, &caps),
        Err(Skip::NotInCampaign)
    );
    assert_eq!(
        m.explain(9, 0, &lead(good), None, now, &caps),
        Err(Skip::NotInCampaign)
    );
}

#[test]
fn buyers_without_verticals_take_any_consent() {
    let buyers = vec![
        buyer(&["solar"], &[], "", None, &[]),
        buyer(&["solar"], &["solar", "home_improvement"], "", None, &[]),
        buyer(&["solar"], &["solar"], "", None, &[]),
    ];
    let m = Matcher::new(&campaigns(), &buyers);
    let caps = uncapped(&buyers);
    let l = lead(json!({"zip": "90210"}));
    assert_eq!(eligible(&m, 1, &l, None, OPEN, &caps), vec![0, 1, 2]);
    assert_eq!(
        eligible(&m, 1, &l, Some("home_improvement"), OPEN, &caps),
        vec![0, 1]
    );
    assert_eq!(
        eligible(&m, 1, &l, Some("auto_insurance"), OPEN, &caps),
        vec![0]
    );
}

#[test]
fn paused_at_cap_and_unknown_buyers_are_skipped() {
    let buyers = example();
    let m = Matcher::new(&campaigns(), &buyers);
    let limits = CapLimits {
        daily: Some(1),
        ..CapLimits::UNCAPPED
    };
    // Buyer 4 has no row in the table.
    let caps = CapTable::new(&[
        (CapLimits::UNCAPPED, chrono_tz::America::Chicago),
        (limits, Tz::UTC),
        (CapLimits::UNCAPPED, Tz::UTC),
        (CapLimits::UNCAPPED, Tz::UTC),
    ]);
    let l = lead(json!({"state": "TX", "zip": "77002", "age": 34, "insured": true}));
    let now = utc(OPEN);
    assert_eq!(eligible(&m, 0, &l, None, OPEN, &caps), vec![0, 1, 2]);
    assert!(caps.reserve(1, now, 1000).is_some());
    caps.pause(2);
    assert_eq!(eligible(&m, 0, &l, None, OPEN, &caps), vec![0]);
    assert_eq!(m.explain(0, 1, &l, None, now, &caps), Err(Skip::AtCap));
    assert_eq!(m.explain(0, 2, &l, None, now, &caps), Err(Skip::Paused));
    caps.resume(2);
    assert_eq!(eligible(&m, 0, &l, None, OPEN, &caps), vec![0, 2]);
    // The next local day (Chicago buyer 0 aside, buyer 1's day is UTC).
    assert_eq!(
        eligible(&m, 0, &l, None, "2026-11-26T15:00:00Z", &caps),
        vec![0, 1, 2]
    );
}

#[test]
fn unknown_campaign_gives_no_buyers() {
    let buyers = example();
    let m = Matcher::new(&campaigns(), &buyers);
    let caps = uncapped(&buyers);
    assert_eq!(
        eligible(&m, 7, &lead(json!({"state": "TX"})), None, OPEN, &caps),
        Vec::<usize>::new()
    );
}

const STATES: [&str; 8] = ["TX", "CA", "NY", "FL", "OK", "LA", "AZ", "NV"];
const ZONES: [&str; 20] = [
    "UTC",
    "America/Chicago",
    "America/New_York",
    "America/Denver",
    "America/Los_Angeles",
    "America/Phoenix",
    "America/Anchorage",
    "Pacific/Honolulu",
    "Europe/London",
    "Europe/Paris",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Australia/Adelaide",
    "America/Sao_Paulo",
    "Africa/Cairo",
    "Europe/Moscow",
    "Asia/Dubai",
    "America/Halifax",
    "America/St_Johns",
];

fn random_buyer(rng: &mut Rng, i: usize) -> BuyerRules {
    let campaigns: Vec<&str> = match rng.below(4) {
        0 => vec!["solar"],
        1 => vec!["auto-insurance", "solar"],
        _ => vec!["auto-insurance"],
    };
    let verticals: Vec<&str> = match rng.below(4) {
        0 => vec![],
        1 => vec!["solar"],
        _ => vec!["auto_insurance"],
    };
    let states: Vec<String> = (0..rng.below(4))
        .map(|_| format!("{:?}", rng.pick(&STATES)))
        .collect();
    let zips: Vec<String> = (0..rng.below(3))
        .map(|_| format!("\"{}\"", 7 + rng.below(3)))
        .collect();
    let mut fields = Vec::new();
    for _ in 0..rng.below(4) {
        fields.push(match rng.below(5) {
            0 => format!(
                "{{ field = \"age\", op = \">=\", value = {} }}",
                18 + rng.below(30)
            ),
            1 => format!(
                "{{ field = \"insured\", op = \"==\", value = {} }}",
                rng.below(2) == 0
            ),
            2 => "{ field = \"lead_type\", op = \"in\", value = [\"auto\", \"home\"] }".to_string(),
            3 => format!("{{ field = \"f{}\", op = \"exists\" }}", rng.below(80)),
            _ => "{ field = \"email\", op = \"exists\", value = false }".to_string(),
        });
    }
    // No restriction is written by leaving the key out: an empty list is refused.
    let list = |key: &str, items: &[String]| {
        if items.is_empty() {
            String::new()
        } else {
            format!("{key} = [{}]\n", items.join(","))
        }
    };
    let filters_toml = format!(
        "{}{}fields = [{}]",
        list("states", &states),
        list("zip_prefixes", &zips),
        fields.join(",")
    );
    let hours: Vec<&str> = match rng.below(4) {
        0 => vec![],
        1 => vec!["mon-fri 08:00-20:00", "sat 09:00-14:00"],
        2 => vec!["daily 22:00-06:00"],
        _ => vec!["sun,tue,thu 00:00-12:00"],
    };
    let tz = ZONES[i % ZONES.len()];
    buyer(&campaigns, &verticals, &filters_toml, Some(tz), &hours)
}

fn random_lead(rng: &mut Rng) -> Fields {
    let mut l = Fields::default();
    if rng.below(6) != 0 {
        l.insert(
            "state".into(),
            json!(rng.pick(&STATES).to_ascii_lowercase()),
        );
    }
    if rng.below(6) != 0 {
        l.insert(
            "zip".into(),
            json!(format!("{}{:04}", 6 + rng.below(4), rng.below(10_000))),
        );
    }
    l.insert(
        "age".into(),
        if rng.below(2) == 0 {
            json!(16 + rng.below(40))
        } else {
            json!((16 + rng.below(40)).to_string())
        },
    );
    l.insert("insured".into(), json!(rng.below(2) == 0));
    l.insert(
        "lead_type".into(),
        json!(rng.pick(&["auto", "home", "life"])),
    );
    for _ in 0..rng.below(10) {
        l.insert(format!("f{}", rng.below(80)), json!(1));
    }
    if rng.below(2) == 0 {
        l.insert("email".into(), json!("a@b.c"));
    }
    l
}

/// The index must agree exactly with checking every buyer one by one, whatever the mix of
/// states, zips, predicates (more distinct fields than the per-lead cache holds), hours, zones
/// (more than the per-lead clock cache holds), verticals, pauses and caps.
#[test]
fn index_agrees_with_checking_every_buyer() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let buyers: Vec<BuyerRules> = (0..200).map(|i| random_buyer(&mut rng, i)).collect();
    let camps = campaigns();
    let m = Matcher::new(&camps, &buyers);
    let rows: Vec<(CapLimits, Tz)> = buyers
        .iter()
        .map(|b| {
            (
                CapLimits {
                    daily: Some(rng.below(3) as u64),
                    ..CapLimits::UNCAPPED
                },
                b.schedule.tz(),
            )
        })
        .collect();
    let caps = CapTable::new(&rows);
    for i in (0..buyers.len()).step_by(7) {
        caps.pause(i);
    }
    let start = utc("2026-03-05T00:00:00Z").timestamp();
    let mut out = Vec::new();
    let mut total = 0;
    for _ in 0..600 {
        let l = random_lead(&mut rng);
        let now = DateTime::from_timestamp(start + (rng.next() % (30 * 86_400)) as i64, 0).unwrap();
        let consent = match rng.below(3) {
            0 => None,
            1 => Some("auto_insurance"),
            _ => Some("solar"),
        };
        let ci = rng.below(camps.len());
        if rng.below(4) == 0 {
            let b = rng.below(buyers.len());
            let _kept = caps.reserve(b, now, 100);
        }
        m.eligible(ci, &l, consent, now, &caps, &mut out);
        let expected: Vec<usize> = buyers
            .iter()
            .enumerate()
            .filter(|(i, b)| {
                let vertical = consent.unwrap_or(&camps[ci].vertical);
                b.campaigns.contains(&camps[ci].id)
                    && (b.verticals.is_empty() || b.verticals.iter().any(|v| v == vertical))
                    && b.filters.matches(&l)
                    && b.schedule.is_open(now)
                    && caps.has_room(*i, now)
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            out, expected,
            "lead {l:?} at {now} consent {consent:?} campaign {ci}"
        );
        for b in m.campaign_buyers(ci) {
            assert_eq!(
                m.explain(ci, b, &l, consent, now, &caps).is_ok(),
                expected.contains(&b)
            );
        }
        total += out.len();
    }
    assert!(total > 300, "the cross-check saw eligible buyers ({total})");
}

/// The campaigns and buyers of the contract's example `exchange.toml`, verbatim.
const EXAMPLE_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8080"

[[campaigns]]
id = "auto-insurance"
vertical = "auto_insurance"
method = "ping_post"               # "ping_post", "waterfall", "round_robin", "weighted"
sale = "exclusive"                 # "exclusive" or "shared"
max_sales = 1                      # for "shared": sell to up to this many distinct buyers
ping_timeout_ms = 800
post_timeout_ms = 2000
reserve_price = 5.00
ping_fields = ["state", "zip", "lead_type", "age", "insured"]
required_fields = ["first_name", "last_name", "phone", "email", "state", "zip"]
require_consent = true
dedupe_days = 30                   # same phone or email within this many days: rejected as duplicate
fallback = "waterfall"             # when no bid wins: "none" or another method over fixed-price buyers
hold_ms = 30000                    # seller-side ping-post: how long bids are held for /v1/post
# suppression_file = "config/dnc.txt"   # one phone number a line: such leads are rejected as suppressed

[[campaigns]]
id = "solar"
vertical = "solar"
method = "ping_post"
sale = "shared"
max_sales = 3
ping_timeout_ms = 1200
post_timeout_ms = 2000
reserve_price = 10.00
ping_fields = ["state", "zip", "roof_type", "monthly_bill"]
required_fields = ["phone", "zip"]
require_consent = true
fallback = "none"

[[buyers]]
id = "acme-ins"
campaigns = ["auto-insurance"]
verticals = ["auto_insurance"]     # consent vertical must be one of these
ping_url = "http://127.0.0.1:9101/ping"
post_url = "http://127.0.0.1:9101/post"
headers = { "X-Api-Key" = "acme-secret" }
max_connections = 64
timezone = "America/Chicago"
hours = ["mon-fri 08:00-20:00", "sat 09:00-14:00"]
[buyers.filters]
states = ["TX", "OK", "LA"]
zip_prefixes = ["770", "750"]
fields = [ { field = "age", op = ">=", value = 21 }, { field = "insured", op = "==", value = true } ]
[buyers.caps]
hourly = 50
daily = 500
weekly = 2000
monthly = 6000
daily_budget = 15000.00

[[buyers]]
id = "blue-ins"
campaigns = ["auto-insurance"]
verticals = ["auto_insurance"]
ping_url = "https://bids.blue-ins.example/v1/ping"
post_url = "https://bids.blue-ins.example/v1/post"
max_connections = 32
[buyers.caps]
daily = 200

[[buyers]]
id = "fallback-ins"                # fixed price, used by the waterfall fallback
campaigns = ["auto-insurance"]
verticals = ["auto_insurance"]
post_url = "http://127.0.0.1:9103/post"
price = 18.00
priority = 1                       # waterfall order, 1 first
weight = 1                         # for "weighted"

[[buyers]]
id = "sun-power"
campaigns = ["solar"]
verticals = ["solar"]
ping_url = "http://127.0.0.1:9104/ping"
post_url = "http://127.0.0.1:9104/post"
[buyers.filters]
states = ["CA", "AZ", "NV", "TX"]
fields = [ { field = "monthly_bill", op = ">=", value = 100 } ]
[buyers.caps]
daily = 300

[[buyers]]
id = "legacy-ins"                  # a buyer with its own API: form-encoded requests, XML answers
campaigns = ["auto-insurance"]
verticals = ["auto_insurance"]
ping_url = "http://127.0.0.1:9105/api"
post_url = "http://127.0.0.1:9105/api"
[buyers.adapter]
request = "form"                   # "json" (the native protocol) or "form"
response = "xml"                   # "json" or "xml"
# Templates: "{ping_id}", "{bid_id}", "{price}", "{campaign}", "{lead.FIELD}", "{consent.FIELD}".
# A ping template may name only the campaign's ping_fields; `gavel check` refuses anything else.
ping_body = { Key = "lx-123", Mode = "ping", State = "{lead.state}", Zip = "{lead.zip}", Ref = "{ping_id}" }
post_body = { Key = "lx-123", Mode = "post", Lead_ID = "{bid_id}", First_Name = "{lead.first_name}", Last_Name = "{lead.last_name}", Phone = "{lead.phone}", Email = "{lead.email}", Zip = "{lead.zip}", Price = "{price}", TrustedForm = "{consent.trustedform_cert_url}" }
bid_path = "/response/price"       # JSON pointer into the answer; for XML, the path of element names
bid_id_path = "/response/lead_id"
accepted_path = "/response/status"
accepted_values = ["Matched", "Accepted"]
reason_path = "/response/error"
"#;

#[test]
fn rules_from_the_example_config() {
    let text = EXAMPLE_CONFIG;
    let raw: crate::config::types::RawConfig = toml::from_str(text).unwrap();
    let rules: Vec<BuyerRules> = raw
        .buyers
        .iter()
        .map(|b| BuyerRules::from_config(b).unwrap())
        .collect();
    let camps: Vec<CampaignRules> = raw
        .campaigns
        .iter()
        .map(CampaignRules::from_config)
        .collect();
    let m = Matcher::new(&camps, &rules);
    let caps = uncapped(&rules);
    let l = lead(
        json!({"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}),
    );
    let ids: Vec<&str> = {
        let mut out = Vec::new();
        m.eligible(0, &l, Some("auto_insurance"), utc(OPEN), &caps, &mut out);
        out.iter().map(|&i| raw.buyers[i].id.as_str()).collect()
    };
    assert_eq!(
        ids,
        vec!["acme-ins", "blue-ins", "fallback-ins", "legacy-ins"]
    );
}

#[test]
fn rules_errors_name_the_key() {
    let cfg: crate::config::types::BuyerConfig = toml::from_str(
        r#"id = "b"
           hours = ["mon-fri 08:00-20:00", "mun 09:00-10:00"]"#,
    )
    .unwrap();
    assert_eq!(BuyerRules::from_config(&cfg).unwrap_err().key(), "hours[1]");
    let cfg: crate::config::types::BuyerConfig = toml::from_str(
        r#"id = "b"
           [filters]
           fields = [ { field = "a", op = "==", value = 1 }, { field = "name", op = "=~", value = "x" } ]"#,
    )
    .unwrap();
    let e = BuyerRules::from_config(&cfg).unwrap_err();
    assert_eq!(e.key(), "filters.fields[1].op");
    assert!(
        e.to_string()
            .starts_with("filters.fields[1].op: unknown operator \"=~\""),
        "{e}"
    );
}
