use super::*;

const CONTRACT: &str = include_str!("../../config/exchange.example.toml");

#[test]
fn the_contract_example_loads_unchanged() {
    let snap = match parse(CONTRACT) {
        Ok(s) => s,
        Err(e) => panic!("contract example must load: {}", e),
    };
    assert_eq!(snap.sellers.len(), 2);
    assert_eq!(snap.campaigns.len(), 2);
    assert_eq!(snap.buyers.len(), 5);
    let auto = &snap.campaigns[snap.campaign_by_id("auto-insurance").unwrap()];
    assert_eq!(auto.reserve_cents, 500);
    assert_eq!(auto.ping_timeout, Duration::from_millis(800));
    assert_eq!(auto.fallback, Some(Method::Waterfall));
    let solar = &snap.campaigns[snap.campaign_by_id("solar").unwrap()];
    assert_eq!(solar.sale, SaleKind::Shared(3));
    assert_eq!(snap.sellers[0].payout, Payout::ShareBp(8000));
    assert_eq!(snap.sellers[1].payout, Payout::Fixed(2000));
    let acme = &snap.buyers[snap.buyer_by_id("acme-ins").unwrap()];
    assert_eq!(acme.caps.daily_budget_cents, Some(1_500_000));
    assert_eq!(acme.caps.daily, Some(500));
    assert_eq!(acme.timezone, chrono_tz::America::Chicago);
    assert_eq!(acme.ping.as_ref().unwrap().port, 9101);
    assert_eq!(
        acme.headers,
        vec![("X-Api-Key".to_string(), "acme-secret".to_string())]
    );
    let blue = &snap.buyers[snap.buyer_by_id("blue-ins").unwrap()];
    assert_eq!(blue.ping.as_ref().unwrap().scheme, Scheme::Https);
    assert_eq!(blue.ping.as_ref().unwrap().port, 443);
    assert_eq!(snap.seller_by_key("sk-blue-9876543210"), Some(1));
    assert_eq!(snap.buyers[2].price_cents, Some(1800));
}

fn invalid(text: &str) -> Vec<Issue> {
    match parse(text) {
        Ok(_) => panic!("expected an invalid config"),
        Err(ConfigError::Invalid(issues)) => issues,
        Err(ConfigError::Parse(i)) => vec![i],
        Err(e) => panic!("unexpected error {}", e),
    }
}

#[test]
fn validation_errors_name_the_key_and_the_line() {
    let text = CONTRACT.replace("reserve_price = 10.00", "reserve_price = -3.0");
    let issues = invalid(&text);
    assert_eq!(issues.len(), 1, "{:?}", issues);
    assert_eq!(issues[0].key, "campaigns[1].reserve_price");
    let expected_line = text
        .lines()
        .position(|l| l.starts_with("reserve_price = -3.0"))
        .unwrap()
        + 1;
    assert_eq!(issues[0].line, Some(expected_line));

    let text = CONTRACT.replace("daily = 300", "daily = -1");
    let issues = invalid(&text);
    let expected_line = text
        .lines()
        .position(|l| l.starts_with("daily = -1"))
        .unwrap()
        + 1;
    assert_eq!(issues[0].line, Some(expected_line), "{:?}", issues);
    assert!(issues[0].key.contains("daily"), "{:?}", issues);
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let text = CONTRACT.replace(
        "max_connections = 32",
        "max_connections = 32\nmax_conections = 3",
    );
    let issues = invalid(&text);
    let expected_line = text
        .lines()
        .position(|l| l.starts_with("max_conections"))
        .unwrap()
        + 1;
    assert_eq!(issues[0].line, Some(expected_line));
    assert!(issues[0].message.contains("max_conections"), "{:?}", issues);
    assert_eq!(issues[0].key, "buyers[1].max_conections");
}

#[test]
fn references_and_enums_are_checked() {
    let text = CONTRACT.replace(
        "campaigns = [\"auto-insurance\", \"solar\"]",
        "campaigns = [\"auto-insurance\", \"sollar\"]",
    );
    let issues = invalid(&text);
    assert_eq!(issues[0].key, "sellers[0].campaigns[1]");
    assert!(issues[0].message.contains("sollar"));

    let text = CONTRACT.replace("sync = \"interval\"", "sync = \"sometimes\"");
    assert_eq!(invalid(&text)[0].key, "journal.sync");

    let text = CONTRACT.replace(
        "timezone = \"America/Chicago\"",
        "timezone = \"Mars/Olympus\"",
    );
    assert_eq!(invalid(&text)[0].key, "buyers[0].timezone");
}

#[test]
fn personal_fields_can_never_be_pinged() {
    let text = CONTRACT.replace(
        "ping_fields = [\"state\", \"zip\", \"lead_type\", \"age\", \"insured\"]",
        "ping_fields = [\"state\", \"zip\", \"email\"]",
    );
    let issues = invalid(&text);
    assert!(
        issues
            .iter()
            .any(|i| i.key == "campaigns[0].ping_fields[2]"),
        "{:?}",
        issues
    );
}

#[test]
fn adapter_ping_templates_may_name_only_ping_fields() {
    let text = CONTRACT.replace("State = \"{lead.state}\"", "State = \"{lead.phone}\"");
    let issues = invalid(&text);
    assert!(
        issues
            .iter()
            .any(|i| i.key.starts_with("buyers[4].adapter.ping_body")),
        "{:?}",
        issues
    );
}

#[test]
fn payout_rules() {
    assert_eq!(Payout::ShareBp(8000).for_price(12000, true), 9600);
    assert_eq!(Payout::ShareBp(8000).for_price(12001, true), 9600);
    assert_eq!(Payout::Fixed(2000).for_price(12000, true), 2000);
    assert_eq!(Payout::Fixed(2000).for_price(0, false), 0);
}

#[test]
fn endpoints_parse() {
    let e = Endpoint::parse("http://127.0.0.1:9101/ping?x=1").unwrap();
    assert_eq!(
        (e.host.as_str(), e.port, e.path.as_str()),
        ("127.0.0.1", 9101, "/ping?x=1")
    );
    assert_eq!(e.host_header, "127.0.0.1:9101");
    let e = Endpoint::parse("https://bids.example").unwrap();
    assert_eq!(
        (e.port, e.path.as_str(), e.host_header.as_str()),
        (443, "/", "bids.example")
    );
    assert!(Endpoint::parse("ftp://x").is_err());
    assert!(Endpoint::parse("http://:80/").is_err());
    assert!(Endpoint::parse("http://a:b/").is_err());
}

fn load_ok(text: &str) -> Snapshot {
    match parse(text) {
        Ok(s) => s,
        Err(e) => panic!("config must load: {}", e),
    }
}

#[test]
fn diff_names_what_was_added_removed_and_changed_by_id() {
    let old = load_ok(CONTRACT);
    assert_eq!(
        diff(&old, &old),
        ConfigDiff {
            sellers: Changes {
                unchanged: 2,
                ..Changes::default()
            },
            campaigns: Changes {
                unchanged: 2,
                ..Changes::default()
            },
            buyers: Changes {
                unchanged: 5,
                ..Changes::default()
            },
            settings: vec![],
        }
    );
    // sun-power removed, a new buyer added, blue-ins's cap changed, solar's reserve changed,
    // and the buyers reordered (ids, not positions, decide).
    let sun = CONTRACT.find("[[buyers]]\nid = \"sun-power\"").unwrap();
    let legacy = CONTRACT.find("[[buyers]]\nid = \"legacy-ins\"").unwrap();
    let mut text = String::new();
    text.push_str(&CONTRACT[..sun]);
    text.push_str(&CONTRACT[legacy..]);
    let text = text
        .replace("daily = 200", "daily = 250")
        .replace("reserve_price = 10.00", "reserve_price = 12.00")
        .replace("max_in_flight = 10000", "max_in_flight = 5000")
        + "\n[[buyers]]\nid = \"new-ins\"\ncampaigns = [\"auto-insurance\"]\nping_url = \"http://127.0.0.1:9200/ping\"\npost_url = \"http://127.0.0.1:9200/post\"\n";
    let new = load_ok(&text);
    let d = diff(&old, &new);
    assert_eq!(d.buyers.added, vec!["new-ins"]);
    assert_eq!(d.buyers.removed, vec!["sun-power"]);
    assert_eq!(d.buyers.changed, vec!["blue-ins"]);
    assert_eq!(d.buyers.unchanged, 3);
    assert_eq!(d.campaigns.changed, vec!["solar"]);
    assert!(d.sellers.is_empty());
    assert_eq!(d.settings, vec!["server.max_in_flight"]);
    assert!(restart_required(&old, &new).is_empty());
}

#[test]
fn restart_only_settings_are_named() {
    let old = load_ok(CONTRACT);
    let text = CONTRACT
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:8081\"")
        .replace("dir = \"data/journal\"", "dir = \"data/journal2\"")
        .replace("reserve_price = 10.00", "reserve_price = 12.00");
    let new = load_ok(&text);
    let keys: Vec<&str> = restart_required(&old, &new).iter().map(|k| k.key).collect();
    assert_eq!(keys, vec!["server.listen", "journal.dir"]);
    let k = &restart_required(&old, &new)[0];
    assert_eq!(
        (k.running.as_str(), k.file.as_str()),
        ("127.0.0.1:8080", "127.0.0.1:8081")
    );
    let a = load_ok(&CONTRACT.replace("workers = 0", "workers = 3"));
    let b = load_ok(&CONTRACT.replace("workers = 0", "workers = 4"));
    let keys: Vec<&str> = restart_required(&a, &b).iter().map(|k| k.key).collect();
    assert_eq!(keys, vec!["server.workers"]);
}
