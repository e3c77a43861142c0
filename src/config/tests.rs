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

/// An amount over the ceiling is refused for being too large, not for its shape.
#[test]
fn an_amount_over_ten_million_dollars_names_the_ceiling() {
    for big in ["20000000", "10000000.01"] {
        let text = CONTRACT.replace("reserve_price = 10.00", &format!("reserve_price = {big}"));
        let issues = invalid(&text);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].key, "campaigns[1].reserve_price");
        assert_eq!(
            issues[0].message,
            format!("must be at most 10000000 dollars, got {big}")
        );
    }
    // The ceiling itself is an amount.
    let text = CONTRACT.replace("reserve_price = 10.00", "reserve_price = 10000000");
    assert!(parse(&text).is_ok());
    // A third decimal is still refused for its shape, and so is a millionth of a dollar
    // whose float falls within a hair of whole cents.
    for amount in ["10.005", "6.000001", "4.999999999"] {
        let issues = invalid(&CONTRACT.replace(
            "reserve_price = 10.00",
            &format!("reserve_price = {amount}"),
        ));
        assert!(
            issues[0]
                .message
                .starts_with("must be a non-negative amount"),
            "{amount}: {issues:?}"
        );
    }
}

/// An engine margin that takes a campaign's whole ping window would have every ping say
/// `timeout_ms` 1: refused at that campaign's `ping_timeout_ms`.
#[test]
fn an_engine_margin_as_long_as_a_ping_window_is_refused() {
    let text = CONTRACT.replace("[server]\n", "[server]\nengine_margin_ms = 800\n");
    let issues = invalid(&text);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "campaigns[0].ping_timeout_ms");
    assert!(
        issues[0]
            .message
            .contains("server.engine_margin_ms (800 ms)"),
        "{issues:?}"
    );
    let text = CONTRACT.replace("[server]\n", "[server]\nengine_margin_ms = 799\n");
    assert!(parse(&text).is_ok());
}

/// A fixed price of $0 would never be posted to (a sale at $0 is no sale): refused.
#[test]
fn a_fixed_price_of_zero_is_refused() {
    let at = CONTRACT
        .find("\nprice = ")
        .expect("a fixed-price buyer in the contract")
        + 1;
    let end = at + CONTRACT[at..].find('\n').unwrap();
    let text = format!("{}price = 0{}", &CONTRACT[..at], &CONTRACT[end..]);
    let issues = invalid(&text);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].key.ends_with("].price"), "{issues:?}");
    assert!(issues[0].message.contains("not sold for $0"), "{issues:?}");
    // A cent is a price.
    let text = format!("{}price = 0.01{}", &CONTRACT[..at], &CONTRACT[end..]);
    assert!(parse(&text).is_ok());
}

/// A bad cap is told under its key once, not with the key repeated in the message.
#[test]
fn a_bad_budget_names_its_key_once() {
    let text = CONTRACT.replace("daily = 300", "daily = 300\ndaily_budget = 12000000");
    let issues = invalid(&text);
    let i = issues
        .iter()
        .find(|i| i.key.ends_with("caps.daily_budget"))
        .unwrap_or_else(|| panic!("{issues:?}"));
    assert!(
        i.message
            .starts_with("12000000 must be a number of dollars"),
        "{i:?}"
    );
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
fn the_answer_timeout_is_optional_and_bounded() {
    let snap = parse(CONTRACT).unwrap();
    assert!(snap.campaigns.iter().all(|c| c.answer_timeout.is_none()));
    let text = CONTRACT.replace(
        "post_timeout_ms = 2000\nreserve_price = 5.00",
        "post_timeout_ms = 2000\nanswer_timeout_ms = 5000\nreserve_price = 5.00",
    );
    let snap = parse(&text).unwrap();
    let auto = &snap.campaigns[snap.campaign_by_id("auto-insurance").unwrap()];
    assert_eq!(auto.answer_timeout, Some(Duration::from_millis(5000)));
    for bad in ["0", "60001"] {
        let issues = invalid(&text.replace(
            "answer_timeout_ms = 5000",
            &format!("answer_timeout_ms = {bad}"),
        ));
        assert_eq!(
            issues[0].key, "campaigns[0].answer_timeout_ms",
            "{issues:?}"
        );
    }
}

/// An empty `states`, `zip_prefixes` or `verticals` would match every lead: refused.
#[test]
fn an_empty_restricting_list_is_refused() {
    for (from, to, key) in [
        (
            "verticals = [\"auto_insurance\"]",
            "verticals = []",
            "buyers[0].verticals",
        ),
        ("states = [\"TX\", \"OK\", \"LA\"]", "states = []", "states"),
    ] {
        assert!(CONTRACT.contains(from), "{from}");
        let issues = invalid(&CONTRACT.replacen(from, to, 1));
        assert!(issues[0].key.contains(key), "{issues:?}");
        assert!(issues[0].message.contains("empty list"), "{issues:?}");
    }
}

/// An empty time zone is refused (not read as UTC behind the operator's back), and a seller
/// with no campaigns, all of whose leads would be refused, is warned of.
#[test]
fn an_empty_timezone_is_refused_and_a_seller_without_campaigns_warned_of() {
    let issues =
        invalid(&CONTRACT.replacen("timezone = \"America/Chicago\"", "timezone = \" \"", 1));
    assert!(
        issues
            .iter()
            .any(|i| i.key.ends_with(".timezone") && i.message.contains("empty")),
        "{issues:?}"
    );
    let text = CONTRACT.replacen(
        "id = \"blue-leads\"\napi_key = \"sk-blue-9876543210\"\ncampaigns = [\"auto-insurance\"]",
        "id = \"blue-leads\"\napi_key = \"sk-blue-9876543210\"\ncampaigns = []",
        1,
    );
    assert_ne!(text, CONTRACT);
    let w = warnings(&parse(&text).unwrap());
    assert!(
        w.iter()
            .any(|w| w.contains("seller blue-leads has no campaigns")),
        "{w:?}"
    );
}

#[test]
fn an_empty_journal_dir_is_refused_and_an_operator_api_without_a_token_is_warned_of() {
    let dir_line = CONTRACT
        .lines()
        .find(|l| l.starts_with("dir = "))
        .expect("the example names its journal dir");
    let issues = invalid(&CONTRACT.replacen(dir_line, "dir = \" \"", 1));
    assert_eq!(issues[0].key, "journal.dir", "{issues:?}");
    let token_line = CONTRACT
        .lines()
        .find(|l| l.starts_with("token = "))
        .expect("the example has an admin token");
    let snap = parse(&CONTRACT.replacen(token_line, "", 1)).unwrap();
    assert!(
        warnings(&snap)
            .iter()
            .any(|w| w.contains("without [admin] token")),
        "{:?}",
        warnings(&snap)
    );
    assert!(!warnings(&parse(CONTRACT).unwrap())
        .iter()
        .any(|w| w.contains("[admin]")));
    // Without admin_listen there is no operator API at all: said, not silent.
    let listen_line = CONTRACT
        .lines()
        .find(|l| l.starts_with("admin_listen = "))
        .expect("the example has an operator listener");
    let w = warnings(&parse(&CONTRACT.replacen(listen_line, "", 1)).unwrap());
    assert!(
        w.iter()
            .any(|w| w.starts_with("no server.admin_listen: the operator API is off")),
        "{w:?}"
    );
}

/// What `check` passes must start: a journal dir that is a file, and idle timeouts under
/// their floor (which the start would have raised in silence), are refused with their keys.
#[test]
fn a_journal_dir_that_is_a_file_and_idle_timeouts_under_their_floor_are_refused() {
    let dir_line = CONTRACT
        .lines()
        .find(|l| l.starts_with("dir = "))
        .expect("the example names its journal dir");
    let file = std::env::temp_dir().join(format!("gavel-dir-is-a-file-{}", std::process::id()));
    std::fs::write(&file, b"not a directory").unwrap();
    let issues = invalid(&CONTRACT.replacen(
        dir_line,
        &format!("dir = {:?}", file.display().to_string()),
        1,
    ));
    assert_eq!(issues[0].key, "journal.dir", "{issues:?}");
    assert!(
        issues[0].message.contains("is not a directory"),
        "{issues:?}"
    );
    // Nor under a file, nor a link to nothing.
    let under = invalid(&CONTRACT.replacen(
        dir_line,
        &format!("dir = {:?}", file.join("journal").display().to_string()),
        1,
    ));
    assert_eq!(under[0].key, "journal.dir", "{under:?}");
    assert!(under[0].message.contains("cannot be made"), "{under:?}");
    let link = std::env::temp_dir().join(format!("gavel-dir-dangling-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(file.with_extension("gone"), &link).unwrap();
    let dangling = invalid(&CONTRACT.replacen(
        dir_line,
        &format!("dir = {:?}", link.display().to_string()),
        1,
    ));
    let under_link = invalid(&CONTRACT.replacen(
        dir_line,
        &format!("dir = {:?}", link.join("sub").display().to_string()),
        1,
    ));
    let _ = std::fs::remove_file(&link);
    assert!(
        dangling[0].message.contains("symbolic link to nothing"),
        "{dangling:?}"
    );
    assert!(
        under_link[0].message.contains("cannot be made"),
        "{under_link:?}"
    );
    // A file's name written as a directory's.
    for written in ["/", "/."] {
        let issues = invalid(&CONTRACT.replacen(
            dir_line,
            &format!("dir = \"{}{written}\"", file.display()),
            1,
        ));
        assert_eq!(issues[0].key, "journal.dir", "{written}: {issues:?}");
    }
    let _ = std::fs::remove_file(&file);
    // A dir that is not there yet is made at the start.
    assert!(parse(&CONTRACT.replacen(dir_line, "dir = \"no/such/dir/yet\"", 1)).is_ok());

    let with = |server: &str, buyer: &str| {
        CONTRACT
            .replacen("[server]\n", &format!("[server]\n{server}"), 1)
            .replacen("[[buyers]]\n", &format!("[[buyers]]\n{buyer}"), 1)
    };
    let issues = invalid(&with("idle_timeout_ms = 0\n", "idle_timeout_ms = 99\n"));
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        ["server.idle_timeout_ms", "buyers[0].idle_timeout_ms"],
        "{issues:?}"
    );
    assert!(issues[1].message.contains("at least 100 ms"), "{issues:?}");
    assert!(parse(&with("idle_timeout_ms = 1\n", "idle_timeout_ms = 100\n")).is_ok());
}

#[test]
fn a_payout_share_finer_than_a_basis_point_is_refused() {
    for (share, ok) in [
        ("0.8", true),
        ("0.29", true),
        ("0.1234", true),
        ("0.12345", false),
        ("0.99999", false),
    ] {
        let text = CONTRACT.replace("payout_share = 0.80", &format!("payout_share = {share}"));
        assert_ne!(
            text, CONTRACT,
            "the contract config has a payout_share = 0.80"
        );
        match parse(&text) {
            Ok(_) => assert!(ok, "{share} loaded"),
            Err(ConfigError::Invalid(issues)) => {
                assert!(!ok, "{share}: {issues:?}");
                assert!(issues[0].key.ends_with("payout_share"), "{issues:?}");
                assert!(issues[0].message.contains("4 decimals"), "{issues:?}");
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn ids_and_body_limits_must_fit_the_journal() {
    let text = CONTRACT.replace("max_body_bytes = 65536", "max_body_bytes = 2097152");
    let issues = invalid(&text);
    assert_eq!(issues[0].key, "server.max_body_bytes", "{issues:?}");
    let long = "b".repeat(MAX_ID_BYTES + 1);
    for (id, why) in [(long.as_str(), "at most"), ("acme\\nins", "control")] {
        let text = CONTRACT.replace(r#"id = "acme-ins""#, &format!(r#"id = "{id}""#));
        assert_ne!(text, CONTRACT);
        let issues = invalid(&text);
        assert!(
            issues
                .iter()
                .any(|i| i.key == "buyers[0].id" && i.message.contains(why)),
            "{id}: {issues:?}"
        );
    }
}

/// Buyer headers the wire would garble or a buyer's server refuse are told at `check`.
#[test]
fn buyer_headers_that_would_not_reach_the_buyer_as_written_are_refused() {
    let with = |h: &str| {
        CONTRACT.replace(
            r#"headers = { "X-Api-Key" = "acme-secret" }"#,
            &format!("headers = {{ {h} }}"),
        )
    };
    for (h, says) in [
        (r#""X-N" = "a\u0000b""#, "control character"),
        (r#""X-N" = "a\u001bb""#, "control character"),
        (r#""X-N" = " padded ""#, "starts or ends with a space"),
        (r#""X-Key" = "1", "x-key" = "2""#, "given twice"),
        (r#""X-N" = "a\nb""#, "line break"),
    ] {
        let issues = invalid(&with(h));
        assert_eq!(issues.len(), 1, "{h}: {issues:?}");
        assert_eq!(issues[0].key, "buyers[0].headers");
        assert!(issues[0].message.contains(says), "{h}: {issues:?}");
    }
    let many: Vec<String> = (0..65).map(|n| format!(r#""X-{n}" = "v""#)).collect();
    let issues = invalid(&with(&many.join(", ")));
    assert!(
        issues[0].message.contains("at most 64 headers"),
        "{issues:?}"
    );
    let long = format!(r#""X-Long" = "{}""#, "v".repeat(9000));
    let issues = invalid(&with(&long));
    assert!(issues[0].message.contains("8192 bytes"), "{issues:?}");
    // A tab inside a value is fine, as are 64 headers.
    let many: Vec<String> = (0..64).map(|n| format!(r#""X-{n}" = "a\tb""#)).collect();
    assert!(parse(&with(&many.join(", "))).is_ok());
}

#[test]
fn headers_the_exchange_writes_itself_are_refused() {
    for name in [
        "Host",
        "content-type",
        "Content-Length",
        "Connection",
        "Expect",
        "upgrade",
    ] {
        let text = CONTRACT.replace(
            r#"headers = { "X-Api-Key" = "acme-secret" }"#,
            &format!(r#"headers = {{ "X-Api-Key" = "acme-secret", "{name}" = "x" }}"#),
        );
        let issues = invalid(&text);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].key, format!("buyers[0].headers.{name}"));
        assert!(issues[0].message.contains("writes"), "{issues:?}");
        let expected_line = text
            .lines()
            .position(|l| l.starts_with("headers = "))
            .unwrap()
            + 1;
        assert_eq!(issues[0].line, Some(expected_line), "{issues:?}");
    }
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

/// The contract example without its first line starting with `prefix`, and the 1-based line of
/// the table header above that line.
fn without_line(prefix: &str) -> (String, usize) {
    let mut lines: Vec<&str> = CONTRACT.lines().collect();
    let at = lines.iter().position(|l| l.starts_with(prefix)).unwrap();
    let header = lines[..at]
        .iter()
        .rposition(|l| l.starts_with('['))
        .unwrap();
    lines.remove(at);
    (lines.join("\n") + "\n", header + 1)
}

fn parse_error(text: &str) -> Issue {
    match parse(text) {
        Err(ConfigError::Parse(i)) => i,
        Err(e) => panic!("expected a parse error, got {}", e),
        Ok(_) => panic!("expected a parse error"),
    }
}

#[test]
fn a_missing_key_is_named_under_its_own_table() {
    // From the second [[sellers]], the second [[campaigns]], the third [[buyers]].
    for (prefix, key) in [
        ("api_key = \"sk-blue", "sellers[1].api_key"),
        ("vertical = \"solar\"", "campaigns[1].vertical"),
        ("id = \"fallback-ins\"", "buyers[2].id"),
    ] {
        let (text, header) = without_line(prefix);
        let issue = parse_error(&text);
        assert_eq!(issue.key, key, "{issue}");
        assert_eq!(issue.line, Some(header), "{issue}");
        let field = key.rsplit('.').next().unwrap_or("");
        assert_eq!(
            issue.to_string(),
            format!("line {header}: {key}: missing field `{field}`")
        );
    }
}

/// A required top-level key the file lacks is named itself, whatever table comes first, with
/// no line (it is missing from the whole file); one missing from a table that is only implied
/// by its sub-table's header is named under that table.
#[test]
fn a_missing_top_level_key_is_named_itself() {
    for text in [
        "[[sellers]]\nid = \"s\"\napi_key = \"sk-min-00000\"\ncampaigns = [\"c\"]\n\n[[campaigns]]\nid = \"c\"\nvertical = \"v\"\n",
        "[admin]\ntoken = \"abcdefghij\"\n",
        "\n# nothing but a comment\n",
        "",
        "workers = 1\n",
    ] {
        let issue = match parse(text) {
            Err(ConfigError::Parse(i)) => i,
            Err(ConfigError::Invalid(mut v)) if !v.is_empty() => v.remove(0),
            Err(e) => panic!("{text:?}: {e}"),
            Ok(_) => panic!("{text:?}: accepted"),
        };
        if text.starts_with("workers") {
            assert_eq!(issue.key, "workers", "{text:?}: {issue}");
            continue;
        }
        assert_eq!(issue.key, "server", "{text:?}: {issue}");
        assert_eq!(issue.line, None, "{text:?}: {issue}");
        assert_eq!(issue.to_string(), "server: missing field `server`");
    }
    let issue = parse_error("[admin]\ntoken = \"abcdefghij\"\n\n[server]\nworkers = 1\n");
    assert_eq!(issue.key, "server.listen", "{issue}");
    assert_eq!(issue.line, Some(4), "{issue}");
    let issue = parse_error(
        "[admin]\ntoken = \"abcdefghij\"\n\n[server.tls]\ncert_file = \"a\"\nkey_file = \"b\"\n",
    );
    assert_eq!(issue.key, "server.listen", "{issue}");
}

#[test]
fn an_unknown_top_level_table_is_named_itself() {
    let text = format!("{CONTRACT}\n[bogus]\n");
    let issue = parse_error(&text);
    assert_eq!(issue.key, "bogus", "{issue}");
    assert_eq!(issue.line, Some(text.lines().count()), "{issue}");
    assert!(issue.message.contains("unknown field `bogus`"), "{issue}");

    let text = CONTRACT.replace(
        "[buyers.caps]\ndaily = 200",
        "[buyers.caps]\ndaily = 200\nyearly = 3",
    );
    let issue = parse_error(&text);
    assert_eq!(issue.key, "buyers[1].caps.yearly", "{issue}");
    let text = CONTRACT.replace("value = 21 }", "value = 21, bogus = 1 }");
    assert_eq!(parse_error(&text).key, "buyers[0].filters.fields[0].bogus");
    let text = CONTRACT.replace("daily = 300", "daily = \"x\"");
    assert_eq!(parse_error(&text).key, "buyers[3].caps.daily");
}

#[test]
fn a_syntax_error_is_one_line_with_its_line_and_a_key_only_when_there_is_one() {
    let line_of = |text: &str, prefix: &str| {
        text.lines()
            .position(|l| l.starts_with(prefix))
            .map(|n| n + 1)
    };
    // A broken header: the table it was meant to open.
    let text = CONTRACT.replace("[admin]", "[admin");
    let issue = parse_error(&text);
    assert_eq!(issue.key, "admin", "{issue}");
    assert_eq!(issue.line, line_of(&text, "[admin"), "{issue}");
    assert!(!issue.to_string().contains('\n'), "{issue}");
    assert_eq!(
        issue.to_string(),
        format!(
            "line {}: admin: invalid table header: expected `.`, `]`",
            issue.line.unwrap_or(0)
        )
    );
    let text = format!("{CONTRACT}\n[[sellers]\n");
    let issue = parse_error(&text);
    assert_eq!(issue.key, "sellers[2]", "{issue}");
    // A bad value: its key, under the right array element.
    let text = CONTRACT.replace("price = 18.00", "price = 18..0");
    let issue = parse_error(&text);
    assert_eq!(issue.key, "buyers[2].price", "{issue}");
    assert_eq!(issue.line, line_of(&text, "price = 18..0"), "{issue}");
    let text = CONTRACT.replace(
        "token = \"change-me-operator-token\"",
        "token = \"change-me",
    );
    assert_eq!(parse_error(&text).key, "admin.token");
    // A key and its value with no `=` between them: the key.
    let text = CONTRACT.replace("max_in_flight = ", "max_in_flight ");
    let issue = parse_error(&text);
    assert_eq!(issue.key, "server.max_in_flight", "{issue}");
    assert_eq!(issue.line, line_of(&text, "max_in_flight "), "{issue}");
    let text = CONTRACT.replace("max_in_flight = 10000", "max_in_flight");
    assert_eq!(parse_error(&text).key, "server.max_in_flight");
    let text = CONTRACT.replace("[admin]", "[admin]\nlog.level # soon");
    assert_eq!(parse_error(&text).key, "admin.log.level");
    // A `=` in the line's comment is not the key's.
    let text = CONTRACT.replace("workers = 0 ", "workers 0 ");
    assert!(
        text.contains("workers 0  "),
        "the contract's comment follows"
    );
    let issue = parse_error(&text);
    assert_eq!(issue.key, "server.workers", "{issue}");
    let text = CONTRACT.replace("max_in_flight = 10000", "max_in_flight # x = y");
    assert_eq!(parse_error(&text).key, "server.max_in_flight");
    // Inside a multi-line array no key is named rather than a wrong one.
    let text = CONTRACT.replace(
        "hours = [\"mon-fri 08:00-20:00\", \"sat 09:00-14:00\"]",
        "hours = [\n  \"mon-fri 08:00-20:00\",\n  sat\n]",
    );
    let issue = parse_error(&text);
    assert_eq!(issue.key, "", "{issue}");
    assert_eq!(issue.line, line_of(&text, "  sat"), "{issue}");
    assert!(issue.to_string().starts_with("line "), "{issue}");
    assert!(!issue.to_string().contains('\n'), "{issue}");
}

/// A campaign's `ping_fields` of the wrong shape is the one problem told: the buyers'
/// adapter templates are not checked against a list that was never read.
#[test]
fn a_value_of_the_wrong_shape_is_told_once_and_blames_no_other_table() {
    let text = CONTRACT.replace(
        "ping_fields = [\"state\", \"zip\", \"lead_type\", \"age\", \"insured\"]",
        "ping_fields = \"state\"",
    );
    assert_ne!(text, CONTRACT);
    assert!(
        CONTRACT.contains("{lead.state}"),
        "an adapter reads a ping field"
    );
    let issues = invalid(&text);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "campaigns[0].ping_fields", "{issues:?}");
    // Nor when only items of the list are of the wrong type.
    let text = CONTRACT.replace(
        "ping_fields = [\"state\", \"zip\", \"lead_type\", \"age\", \"insured\"]",
        "ping_fields = [\"state\", 1]",
    );
    let issues = invalid(&text);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "campaigns[0].ping_fields[1]", "{issues:?}");
    // Nor are sellers and buyers told their campaign is unknown when a campaign's id is of
    // the wrong shape.
    let text = CONTRACT.replacen("id = \"auto-insurance\"", "id = 5", 1);
    assert_ne!(text, CONTRACT);
    let issues = invalid(&text);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "campaigns[0].id", "{issues:?}");
    // A list that may not be empty, written as a string, is told once: the empty list put in
    // its place is not refused as if the file had it.
    for (from, to, key) in [
        (
            "states = [\"TX\", \"OK\", \"LA\"]",
            "states = \"TX\"",
            "buyers[0].filters.states",
        ),
        (
            "zip_prefixes = [\"770\", \"750\"]",
            "zip_prefixes = 770",
            "buyers[0].filters.zip_prefixes",
        ),
    ] {
        let text = CONTRACT.replacen(from, to, 1);
        assert_ne!(text, CONTRACT);
        let issues = invalid(&text);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].key, key, "{issues:?}");
        assert!(issues[0].message.starts_with("invalid type"), "{issues:?}");
    }
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

/// Spellings of personal fields that sellers use, none of them an exact, lowercase list entry.
const PERSONAL_VARIANTS: &[&str] = &[
    "msisdn",
    "whatsapp",
    "sms",
    "x_forwarded_for",
    "consent_cert",
    "tf_cert",
    "TF-Cert-URL",
    "certificate",
    "emaıl",
    "émail",
    "ｅｍａｉｌ",
    "Email",
    "EMAIL",
    "email_address",
    "alt_email",
    "E-Mail",
    "phone_number",
    "home_phone",
    "work_phone",
    "cell_phone",
    "cell",
    "Phone2",
    "mobile_number",
    "address1",
    "address_line_2",
    "street_address",
    "FirstName",
    "last-name",
    "Name",
    "birthdate",
    "date_of_birth",
    "DOB",
    "ssn_last4",
    "drivers_license",
    "license_number",
    "ip_addr",
    "IP",
    "ipv4",
    "user_agent",
    "jornaya_leadid",
    "universal_leadid",
    "trustedform_cert_url",
    "xxTrustedFormCertUrl",
    "dl_number",
    "DLN",
    "dl",
    "license_num",
    "licence",
    "bday",
    "social",
    "credit_card",
    "bank_account",
    "driver_name",
    "insuredName",
    "policy_holder_name",
    "co_applicant_name",
];

/// Ping fields in the repository's configs and tests, and others a campaign may well ping on.
const NON_PERSONAL: &[&str] = &[
    "state",
    "zip",
    "zip_code",
    "postal_code",
    "city",
    "county",
    "lead_type",
    "age",
    "insured",
    "roof_type",
    "monthly_bill",
    "credit",
    "credit_rating",
    "credit_card_debt",
    "homeowner",
    "home_owner",
    "gender",
    "marital_status",
    "income",
    "vehicle_year",
    "vehicle_make",
    "current_insurer",
    "company_name",
    "license_status",
    "licensed_years",
    "dl_state",
    "has_checking_account",
    "years_at_residence",
    "utility_provider",
    "electric_company",
    "square_feet",
    "loan_amount",
    "country",
    "source",
    "sub_id",
];

#[test]
fn personal_fields_are_recognised_whatever_their_spelling() {
    for f in PERSONAL_VARIANTS {
        assert!(is_personal_field(f), "{f} must count as personal");
    }
    for f in NON_PERSONAL {
        assert!(!is_personal_field(f), "{f} must not count as personal");
    }
    for f in crate::buyer_check::SAMPLE_PING_FIELDS {
        assert!(!is_personal_field(f), "buyer-check's sample pings {f}");
    }
    // However long the name, it is read the same way.
    let long = format!("{}_email", "x".repeat(200));
    assert!(is_personal_field(&long));
    assert!(!is_personal_field(&"x".repeat(200)));
}

#[test]
fn personal_variants_are_refused_as_ping_fields_with_key_and_line() {
    let original = "ping_fields = [\"state\", \"zip\", \"roof_type\", \"monthly_bill\"]";
    let line = CONTRACT.lines().position(|l| l == original).map(|n| n + 1);
    for f in PERSONAL_VARIANTS {
        let text = CONTRACT.replace(original, &format!("ping_fields = [\"state\", {f:?}]"));
        let issues = invalid(&text);
        assert!(
            issues.iter().any(|i| i.key == "campaigns[1].ping_fields[1]"
                && i.line == line
                && i.message.contains("personal")),
            "{f}: {issues:?}"
        );
    }
    let all = NON_PERSONAL
        .iter()
        .map(|f| format!("{f:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = CONTRACT.replace(original, &format!("ping_fields = [{all}]"));
    if let Err(e) = parse(&text) {
        panic!("non-personal ping fields must be accepted: {e}");
    }
}

#[test]
fn a_refused_personal_ping_field_is_left_out_of_the_campaign_too() {
    let text = CONTRACT.replace(
        "ping_fields = [\"state\", \"zip\", \"roof_type\", \"monthly_bill\"]",
        "ping_fields = [\"state\", \"Home_Phone\", \"zip\"]",
    );
    let mut v = Validator {
        notes: Vec::new(),
        text: &text,
        issues: Vec::new(),
        unread: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(&text) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let snap = v.build(&raw);
    assert_eq!(v.issues.len(), 1, "{:?}", v.issues);
    assert_eq!(snap.campaigns[1].ping_fields, vec!["state", "zip"]);
}

#[test]
fn adapter_ping_templates_never_carry_a_personal_field() {
    // Even for a buyer in no campaign, where no ping_fields constrain the template.
    for f in ["Email", "home_phone", "street_address", "user_agent"] {
        let text = CONTRACT
            .replace("State = \"{lead.state}\"", &format!("State = \"{{lead.{f}}}\""))
            .replace(
                "id = \"legacy-ins\"                  # a buyer with its own API: form-encoded requests, XML answers\ncampaigns = [\"auto-insurance\"]",
                "id = \"legacy-ins\"\ncampaigns = []",
            );
        assert!(text.contains("campaigns = []"));
        let issues = invalid(&text);
        assert!(
            issues
                .iter()
                .any(|i| i.key == "buyers[4].adapter.ping_body.State" && i.message.contains(f)),
            "{f}: {issues:?}"
        );
    }
}

/// Every bad adapter key is told, each at its own key and line, in the file's order.
#[test]
fn every_bad_adapter_key_is_told_at_its_own_line() {
    let text = CONTRACT
        .replace(
            "bid_path = \"/response/price\"",
            "bid_path = \"response/price\"",
        )
        .replace(
            "accepted_path = \"/response/status\"",
            "accepted_path = \"/response/@status\"",
        )
        .replace(
            "State = \"{lead.state}\"",
            "State = \"{lead.email}\", Zip5 = \"{lead.phone}\"",
        );
    let issues = invalid(&text);
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).map(|n| n + 1);
    let told: Vec<(&str, Option<usize>)> =
        issues.iter().map(|i| (i.key.as_str(), i.line)).collect();
    assert_eq!(
        told,
        [
            (
                "buyers[4].adapter.ping_body.State",
                line_of("State = \"{lead.email}\"")
            ),
            (
                "buyers[4].adapter.ping_body.Zip5",
                line_of("State = \"{lead.email}\"")
            ),
            (
                "buyers[4].adapter.bid_path",
                line_of("bid_path = \"response/price\"")
            ),
            (
                "buyers[4].adapter.accepted_path",
                line_of("accepted_path = \"/response/@status\"")
            ),
        ],
        "{issues:?}"
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

/// Adapter settings that would do nothing, or something else than written, are refused with
/// their key, once each.
#[test]
fn adapter_settings_that_would_be_ignored_are_refused() {
    let with = |from: &str, to: &str| {
        assert!(CONTRACT.contains(from), "{from}");
        CONTRACT.replace(from, to)
    };
    let cases = [
        // Statuses to accept, and nowhere to read the status from.
        (
            with("accepted_path = \"/response/status\"\n", ""),
            "buyers[4].adapter.accepted_values",
            "accepted_path",
        ),
        // An XML answer to a ping with no path to its bid.
        (
            with(
                "bid_path = \"/response/price\"       # JSON pointer into the answer; for XML, the path of element names\n",
                "",
            )
            .replace("ping_body = { Key = \"lx-123\", Mode = \"ping\", State = \"{lead.state}\", Zip = \"{lead.zip}\", Ref = \"{ping_id}\" }\n", "")
            .replace("request = \"form\"                   # \"json\" (the native protocol) or \"form\"", "request = \"json\""),
            "buyers[4].adapter.bid_path",
            "XML",
        ),
        // Braces that make no placeholder.
        (
            with("State = \"{lead.state}\"", "State = \"{lead.state\""),
            "buyers[4].adapter.ping_body.State",
            "no '}' after it",
        ),
        (
            with("Zip = \"{lead.zip}\", Price", "Zip = \"{lead.zip}}\", Price"),
            "buyers[4].adapter.post_body.Zip",
            "no '{' before it",
        ),
        // An attribute is no element.
        (
            with("bid_path = \"/response/price\"", "bid_path = \"/response/@price\""),
            "buyers[4].adapter.bid_path",
            "names elements only",
        ),
        // Statuses to accept written as none, or as a blank that a missing status matches.
        (
            with(
                "accepted_values = [\"Matched\", \"Accepted\"]",
                "accepted_values = []",
            ),
            "buyers[4].adapter.accepted_values",
            "an empty list",
        ),
        (
            with(
                "accepted_values = [\"Matched\", \"Accepted\"]",
                "accepted_values = [\"Matched\", \" \"]",
            ),
            "buyers[4].adapter.accepted_values",
            "blank value",
        ),
    ];
    for (text, key, says) in cases {
        let issues = invalid(&text);
        let adapter_issues: Vec<_> = issues
            .iter()
            .filter(|i| i.key.starts_with("buyers[4].adapter"))
            .collect();
        assert_eq!(adapter_issues.len(), 1, "{key}: {issues:?}");
        assert_eq!(adapter_issues[0].key, key, "{issues:?}");
        assert!(adapter_issues[0].message.contains(says), "{issues:?}");
    }
    // `{test}` and a dotted field under a ping field are fine in a ping.
    let text = with(
        "Ref = \"{ping_id}\" }",
        "Ref = \"{ping_id}\", T = \"{test}\", Z = \"{lead.zip.five}\" }",
    );
    load_ok(&text);
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
    // The fragment is the client's own: never sent.
    let e = Endpoint::parse("http://127.0.0.1:9101/ping?x=1#frag").unwrap();
    assert_eq!(e.path, "/ping?x=1");
    let e = Endpoint::parse("http://bids.example#frag").unwrap();
    assert_eq!((e.host.as_str(), e.path.as_str()), ("bids.example", "/"));
    // Scheme and host in any case are one server; the path keeps its case.
    let e = Endpoint::parse("HTTPS://Bids.Example.COM:8443/Ping").unwrap();
    assert_eq!(
        (
            e.scheme,
            e.host.as_str(),
            e.path.as_str(),
            e.host_header.as_str()
        ),
        (
            Scheme::Https,
            "bids.example.com",
            "/Ping",
            "bids.example.com:8443"
        )
    );
    assert_eq!(
        e,
        Endpoint::parse("https://bids.example.com:8443/Ping").unwrap()
    );
    assert!(Endpoint::parse("ftp://x").is_err());
    assert!(Endpoint::parse("http://:80/").is_err());
    assert!(Endpoint::parse("http://a:b/").is_err());
    // No request can reach port 0; a sign or a port past 16 bits is no port either.
    for url in [
        "http://127.0.0.1:0/ping",
        "http://[::1]:0/ping",
        "http://127.0.0.1:00000/ping",
        "http://127.0.0.1:+80/ping",
        "http://127.0.0.1:0065536/ping",
        "http://127.0.0.1:8_0/ping",
        "http://127.0.0.1:65536/ping",
        "http://127.0.0.1:/ping",
    ] {
        let e = Endpoint::parse(url).unwrap_err();
        assert!(e.ends_with("bad port (1 to 65535)"), "{url}: {e}");
    }
    assert_eq!(
        Endpoint::parse("http://127.0.0.1:65535/").unwrap().port,
        65535
    );
    assert_eq!(Endpoint::parse("http://[::1]:1/").unwrap().port, 1);
    // Leading zeros are the same port, however many.
    for url in ["http://127.0.0.1:0080/", "http://127.0.0.1:000080/"] {
        let e = Endpoint::parse(url).unwrap();
        assert_eq!((e.port, e.host_header.as_str()), (80, "127.0.0.1"), "{url}");
    }
    assert_eq!(
        Endpoint::parse("http://127.0.0.1:065535/").unwrap().port,
        65535
    );
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

#[test]
fn a_shared_leads_payout_is_the_share_of_its_whole_price_rounded_down_once() {
    let share = Payout::ShareBp(8_000);
    let mut before = 0;
    let mut paid = 0;
    for (i, price) in [3333, 3333, 3334].into_iter().enumerate() {
        paid += share.for_sale(before, price, i == 0);
        before += price;
    }
    assert_eq!(paid, 8_000);
    assert_eq!(paid, share.for_price(before, true));
    // A fixed payout comes with the first sale only.
    let fixed = Payout::Fixed(2_000);
    assert_eq!(fixed.for_sale(0, 1_250, true), 2_000);
    assert_eq!(fixed.for_sale(1_250, 900, false), 0);
}

#[test]
fn busy_polling_is_off_by_default_and_bounded() {
    let snap = parse(CONTRACT).unwrap();
    assert_eq!(snap.server.busy_poll, Duration::ZERO);
    let on = CONTRACT.replace(
        "max_in_flight = 10000",
        "max_in_flight = 10000\nbusy_poll_us = 250",
    );
    assert_eq!(
        parse(&on).unwrap().server.busy_poll,
        Duration::from_micros(250)
    );
    let text = CONTRACT.replace(
        "max_in_flight = 10000",
        "max_in_flight = 10000\nbusy_poll_us = 10001",
    );
    let issues = invalid(&text);
    assert_eq!(issues[0].key, "server.busy_poll_us", "{issues:?}");
    assert!(issues[0].message.contains("10000"), "{issues:?}");
    let expected_line = text
        .lines()
        .position(|l| l.starts_with("busy_poll_us"))
        .unwrap()
        + 1;
    assert_eq!(issues[0].line, Some(expected_line));
}

#[test]
fn a_fixed_payout_above_what_a_lead_may_sell_for_is_warned_about() {
    // The example: blue-leads is paid $20.00 per sold lead on a campaign with a $5.00 reserve.
    let snap = match parse(CONTRACT) {
        Ok(s) => s,
        Err(e) => panic!("contract example must load: {}", e),
    };
    let w = warnings(&snap);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("seller blue-leads: payout_fixed $20.00")
            && w[0].contains("campaign auto-insurance")
            && w[0].contains("($5.00)"),
        "{w:?}"
    );
    // A fallback buyer at $18.00 leaves a lead selling below the payout.
    let text = CONTRACT.replace("reserve_price = 5.00", "reserve_price = 18.00");
    let w = warnings(&parse(&text).unwrap());
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("($18.00)"), "{w:?}");
    // A reserve at the payout keeps the fallback's buyer ($18.00) from every lead: that is
    // what the operator is told.
    let text = CONTRACT.replace("reserve_price = 5.00", "reserve_price = 20.00");
    let w = warnings(&parse(&text).unwrap());
    assert_eq!(
        w,
        vec![
            "campaign auto-insurance: buyer fallback-ins's price $18.00 is under the campaign's \
              reserve_price $20.00: it is never posted to"
                .to_string()
        ]
    );
    // Without the fallback nothing sells below $20.00: no warning.
    let text = text.replace("fallback = \"waterfall\"", "fallback = \"none\"");
    assert_eq!(warnings(&parse(&text).unwrap()), Vec::<String>::new());
    // A share of the price never pays out more than the price.
    let text = CONTRACT.replace("payout_fixed = 20.00", "payout_share = 0.5");
    assert_eq!(warnings(&parse(&text).unwrap()), Vec::<String>::new());
}

/// Whatever the file holds, loading it gives a config or issues that each name a line, never a
/// panic.
#[test]
fn mutated_configs_load_or_are_refused_with_a_line_without_panic() {
    const SPECIAL: &[u8] = b"[]{}=,.\"'#\n 0123456789-_:/*tf\xc3\xa9";
    let mut rng = crate::test_rng::Rng(0x1F83_D9AB_FB41_BD6B);
    let mut refused = 0;
    for _ in 0..3_000 {
        let text = rng.mutate(CONTRACT.as_bytes(), SPECIAL);
        // A file that is not UTF-8 is refused before parsing; here only text is of interest.
        let Ok(text) = String::from_utf8(text) else {
            continue;
        };
        match parse(&text) {
            Ok(_) => {}
            Err(ConfigError::Parse(i)) => {
                refused += 1;
                assert!(i.line.is_some(), "{i}");
            }
            Err(ConfigError::Invalid(issues)) => {
                refused += 1;
                assert!(!issues.is_empty());
                for i in &issues {
                    assert!(i.line.is_some(), "{i}");
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        refused > 100,
        "the edits should break most files: {refused}"
    );
}

#[test]
fn configs_that_can_never_sell_are_warned_about() {
    let base = CONTRACT.replace("payout_fixed = 20.00", "payout_share = 0.5");
    assert_eq!(warnings(&parse(&base).unwrap()), Vec::<String>::new());
    // A zero cap: the buyer is never pinged.
    let text = base.replacen("hourly = 50", "hourly = 0", 1);
    let w = warnings(&parse(&text).unwrap());
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("hourly = 0") && w[0].contains("never pinged"),
        "{w:?}"
    );
    // A buyer in no campaign.
    let text = format!(
        "{base}\n[[buyers]]\nid = \"idle\"\ncampaigns = []\nping_url = \"http://127.0.0.1:9/p\"\npost_url = \"http://127.0.0.1:9/q\"\n"
    );
    let w = warnings(&parse(&text).unwrap());
    assert!(
        w.iter().any(|m| m.contains("buyer idle: in no campaign")),
        "{w:?}"
    );
    // A buyer whose verticals leave out its campaign's: never eligible, a case apart included.
    let text = base.replacen("verticals = [\"solar\"]", "verticals = [\"Solar\"]", 1);
    assert_ne!(text, base);
    let w = warnings(&parse(&text).unwrap());
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("buyer sun-power") && w[0].contains("\"solar\""),
        "{w:?}"
    );
    // A budget under the campaign's reserve: no bid is ever taken, so no sale either.
    let text = base.replacen("daily_budget = 15000.00", "daily_budget = 4.99", 1);
    assert_ne!(text, base);
    let w = warnings(&parse(&text).unwrap());
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("buyer acme-ins")
            && w[0].contains("daily_budget $4.99")
            && w[0].contains("auto-insurance's reserve_price $5.00"),
        "{w:?}"
    );
    // At the reserve, one lead can still be sold.
    let text = base.replacen("daily_budget = 15000.00", "daily_budget = 5.00", 1);
    assert_eq!(warnings(&parse(&text).unwrap()), Vec::<String>::new());
    // An id that could read as part of the warning is quoted.
    let text = format!(
        "{base}\n[[buyers]]\nid = \"x: daily_budget $1.00, y\"\ncampaigns = []\nping_url = \"http://127.0.0.1:9/p\"\npost_url = \"http://127.0.0.1:9/q\"\n"
    );
    let w = warnings(&parse(&text).unwrap());
    assert!(
        w.iter()
            .any(|m| m.starts_with("buyer \"x: daily_budget $1.00, y\": in no campaign")),
        "{w:?}"
    );
}

/// Settings that quietly do less than they seem to: a cascade that can never start, and
/// dotted field names where only a member of that very name is read.
#[test]
fn an_answer_timeout_under_the_post_timeout_and_dotted_field_names_are_warned_of() {
    let base = CONTRACT.replace("payout_fixed = 20.00", "payout_share = 0.5");
    let text = base.replacen(
        "post_timeout_ms = 2000",
        "post_timeout_ms = 2000\nanswer_timeout_ms = 1500",
        1,
    );
    let w = warnings(&parse(&text).unwrap());
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains(
            "campaign auto-insurance: answer_timeout_ms 1500 is shorter than post_timeout_ms 2000"
        ),
        "{w:?}"
    );
    let text = base.replacen(
        "post_timeout_ms = 2000",
        "post_timeout_ms = 2000\nanswer_timeout_ms = 2500",
        1,
    );
    assert_eq!(warnings(&parse(&text).unwrap()), Vec::<String>::new());

    let text = base.replacen(
        "ping_fields = [\"state\", \"zip\"",
        "ping_fields = [\"vehicle.year\", \"state\", \"zip\"",
        1,
    );
    assert_ne!(text, base);
    let w = warnings(&parse(&text).unwrap());
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("ping_fields \"vehicle.year\" is the lead member of that very name")
            && w[0].contains("nested in \"vehicle\""),
        "{w:?}"
    );
}

#[test]
fn the_operator_api_cannot_share_the_seller_apis_port() {
    for admin in ["127.0.0.1:8080", "0.0.0.0:8080"] {
        let text = CONTRACT.replace(
            "admin_listen = \"127.0.0.1:9090\"",
            &format!("admin_listen = \"{admin}\""),
        );
        let issues = invalid(&text);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].key, "server.admin_listen", "{issues:?}");
        assert!(issues[0].line.is_some(), "{issues:?}");
    }
    // Port 0 picks a free port for each.
    let text = CONTRACT
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "admin_listen = \"127.0.0.1:9090\"",
            "admin_listen = \"127.0.0.1:0\"",
        );
    assert!(parse(&text).is_ok());
    // Another address on the same port is fine.
    let text = CONTRACT.replace(
        "admin_listen = \"127.0.0.1:9090\"",
        "admin_listen = \"127.0.0.2:8080\"",
    );
    assert!(parse(&text).is_ok());
}

#[test]
fn a_consent_age_is_between_an_hour_and_a_year() {
    let with = |h: &str| {
        CONTRACT.replace(
            "reserve_price = 10.00",
            &format!("reserve_price = 10.00\nconsent_max_age_hours = {h}"),
        )
    };
    let snap = parse(&with("72")).unwrap();
    assert_eq!(
        snap.campaigns[1].consent_max_age,
        Some(chrono::Duration::hours(72))
    );
    assert_eq!(parse(CONTRACT).unwrap().campaigns[1].consent_max_age, None);
    for bad in ["0", "8761"] {
        let issues = invalid(&with(bad));
        assert_eq!(
            issues[0].key, "campaigns[1].consent_max_age_hours",
            "{issues:?}"
        );
    }
}

/// Past the most problems listed, the rest are counted, not dropped without a word; the list
/// runs down the file.
#[test]
fn problems_past_the_limit_are_counted() {
    let mut text = CONTRACT.to_string();
    for i in 0..70 {
        text.push_str(&format!(
            "\n[[buyers]]\nid = \"extra-{i}\"\ncampaigns = [\"auto-insurance\"]\npost_url = \"http://127.0.0.1:9/post\"\nprice = 1.005\n"
        ));
    }
    let issues = invalid(&text);
    assert_eq!(issues.len(), MAX_CONFIG_ISSUES + 1, "{issues:#?}");
    let last = issues.last().unwrap();
    assert_eq!((last.key.as_str(), last.line), ("", None), "{last}");
    assert!(
        last.message
            .starts_with("6 more problem(s) after these, not listed"),
        "{last}"
    );
    let lines: Vec<usize> = issues.iter().filter_map(|i| i.line).collect();
    assert_eq!(lines.len(), MAX_CONFIG_ISSUES);
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

/// Every wrong type and unknown key is reported in one check, each on its own line, with the
/// value problems of the tables they do not touch; a key taken out for its type is not then
/// reported missing as well.
#[test]
fn every_shape_problem_is_reported_at_once() {
    let line_of =
        |text: &str, prefix: &str| text.lines().position(|l| l.starts_with(prefix)).unwrap() + 1;
    let text = CONTRACT
        .replace("max_in_flight = 10000", "max_in_flight = \"lots\"")
        .replace("hold_ms = 30000", "hold_ms = 30000\ncolour = \"red\"")
        .replace("daily = 200", "daily = \"two hundred\"")
        .replace(
            "headers = { \"X-Api-Key\" = \"acme-secret\" }",
            "headers = { \"X-Api-Key\" = 7, \"X-Other\" = \"ok\" }",
        )
        .replace("api_key = \"sk-blue-9876543210\"", "api_key = 9876543210")
        .replace("reserve_price = 10.00", "reserve_price = -3.0");
    let issues = invalid(&text);
    let got: Vec<(String, Option<usize>)> =
        issues.iter().map(|i| (i.key.clone(), i.line)).collect();
    let want = vec![
        (
            "server.max_in_flight".to_string(),
            Some(line_of(&text, "max_in_flight")),
        ),
        (
            "sellers[1].api_key".to_string(),
            Some(line_of(&text, "api_key = 98")),
        ),
        (
            "campaigns[0].colour".to_string(),
            Some(line_of(&text, "colour")),
        ),
        (
            "campaigns[1].reserve_price".to_string(),
            Some(line_of(&text, "reserve_price = -3")),
        ),
        (
            "buyers[0].headers.X-Api-Key".to_string(),
            Some(line_of(&text, "headers =")),
        ),
        (
            "buyers[1].caps.daily".to_string(),
            Some(line_of(&text, "daily = \"two")),
        ),
    ];
    assert_eq!(got, want, "{issues:#?}");
    assert!(issues[1].message.contains("string"), "{}", issues[1]);
    // The value expected is said in words, not as a Rust type.
    assert!(
        issues[0]
            .message
            .ends_with("expected a whole number, 0 or more"),
        "{}",
        issues[0]
    );
    for i in &issues {
        for rust in ["usize", "u64", "u32", "u16", "i64", "f64", "borrowed"] {
            assert!(!i.message.contains(rust), "{i}");
        }
    }

    // A syntax error still stops the reading where it is.
    let text = CONTRACT
        .replace("max_in_flight = 10000", "max_in_flight = \"lots\"")
        .replace("daily = 200", "daily = = 200");
    assert_eq!(invalid(&text).len(), 1);
}

#[test]
fn a_seller_certificate_is_warned_of_when_out_of_its_dates_or_near_its_end() {
    let mut snap = parse(CONTRACT).unwrap();
    let day = 86_400;
    // Valid 2026-01-01 00:00 UTC to 2026-12-31 00:00 UTC.
    let (from, to) = (1_767_225_600, 1_767_225_600 + 364 * day);
    snap.seller_cert_validity = Some((from, to));
    let cert = |snap: &Snapshot, now| -> Vec<String> {
        warnings_at(snap, now)
            .into_iter()
            .filter(|w| w.starts_with("server.tls.cert_file"))
            .collect()
    };
    assert_eq!(cert(&snap, from + day), Vec::<String>::new());
    assert_eq!(
        cert(&snap, to - CERT_EXPIRY_WARNING_DAYS * day),
        Vec::<String>::new()
    );
    assert_eq!(
        cert(&snap, to - CERT_EXPIRY_WARNING_DAYS * day + 1),
        vec![
            "server.tls.cert_file: the certificate expires on 2026-12-31 00:00 UTC (in 13 days); \
              renew it and reload"
        ]
    );
    assert!(cert(&snap, to - day)[0].contains("(in 1 day)"));
    assert!(cert(&snap, to - 1)[0].contains("(in less than a day)"));
    assert_eq!(
        cert(&snap, to),
        vec![
            "server.tls.cert_file: the certificate expired on 2026-12-31 00:00 UTC; sellers' \
              TLS clients refuse it"
        ]
    );
    assert_eq!(
        cert(&snap, from - 1),
        vec![
            "server.tls.cert_file: the certificate is not valid before 2026-01-01 00:00 UTC; \
              sellers' TLS clients refuse it until then"
        ]
    );
    snap.seller_cert_validity = None;
    assert_eq!(cert(&snap, to), Vec::<String>::new());
}

#[test]
fn max_sales_that_nothing_uses_is_warned_of() {
    let shared_1 = CONTRACT.replacen("max_sales = 3", "max_sales = 1", 1);
    let w = warnings(&parse(&shared_1).unwrap());
    assert!(
        w.contains(
            &"campaign \"solar\": sale = \"shared\" with max_sales = 1 (the default) sells each \
              lead to one buyer, as \"exclusive\" does; set max_sales"
                .to_string()
        ),
        "{w:?}"
    );
    // Left out, it defaults to 1: the same warning.
    let shared_default = CONTRACT.replacen("max_sales = 3\n", "", 1);
    assert_eq!(warnings(&parse(&shared_default).unwrap()), w);
    let exclusive_3 = CONTRACT.replacen(
        "max_sales = 1                      # for",
        "max_sales = 3                      # for",
        1,
    );
    assert!(
        warnings(&parse(&exclusive_3).unwrap()).contains(
            &"campaign \"auto-insurance\": max_sales = 3 is not used by sale = \"exclusive\" \
              (each lead sells once); for up to 3 buyers set sale = \"shared\""
                .to_string()
        ),
        "{:?}",
        warnings(&parse(&exclusive_3).unwrap())
    );
    assert!(!warnings(&parse(CONTRACT).unwrap())
        .iter()
        .any(|w| w.contains("max_sales")));
    // A value of the wrong type is not told a range the key would refuse (0 to 4294967295).
    for bad in ["max_sales = 2.5", "max_sales = -1"] {
        let issues = invalid(&CONTRACT.replacen("max_sales = 3", bad, 1));
        assert!(
            issues.iter().any(|i| i.key.ends_with("max_sales")
                && i.message.ends_with("expected a whole number, 0 or more")),
            "{issues:?}"
        );
        assert!(!issues.iter().any(|i| i.message.contains("4294967295")));
    }
}

#[test]
fn a_weighted_draws_lowest_price_leaves_out_buyers_of_weight_0() {
    // A weighted campaign: fallback-ins at $18.00 and another buyer at $30.00. With
    // fallback-ins at weight 0 the lowest price a lead sells for is $30.00, above the $25.00
    // paid to the seller: no warning; at weight 1 it is $18.00.
    let text = |weight: u32| {
        let text = CONTRACT
            .replacen(
                "method = \"ping_post\"               #",
                "method = \"weighted\" #",
                1,
            )
            .replacen("fallback = \"waterfall\"", "fallback = \"none\"", 1)
            .replacen(
                "weight = 1                         # for",
                &format!("weight = {weight} # for"),
                1,
            )
            .replacen("payout_fixed = 20.00", "payout_fixed = 25.00", 1);
        format!(
            "{text}\n[[buyers]]\nid = \"dear\"\ncampaigns = [\"auto-insurance\"]\npost_url = \"http://127.0.0.1:9/post\"\nprice = 30.00\nweight = 1\n"
        )
    };
    let payout = |w: Vec<String>| -> Vec<String> {
        w.into_iter()
            .filter(|w| w.contains("payout_fixed"))
            .collect()
    };
    assert_eq!(
        payout(warnings(&parse(&text(0)).unwrap())),
        Vec::<String>::new()
    );
    let w = payout(warnings(&parse(&text(1)).unwrap()));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("($18.00)"), "{w:?}");
}

/// A buyer whose field filters no lead can meet is valid config, but never offered a lead:
/// `check` says so, naming the buyer and the filter; the contract's own filters are fine.
#[test]
fn field_filters_no_lead_can_meet_are_warned_of() {
    let old = r#"fields = [ { field = "age", op = ">=", value = 21 }, { field = "insured", op = "==", value = true } ]"#;
    let new = r#"fields = [ { field = "age", op = ">=", value = 21 }, { field = "insured", op = "==", value = true }, { field = "age", op = "<", value = 18 } ]"#;
    assert!(CONTRACT.contains(old));
    let w = warnings(&parse(&CONTRACT.replacen(old, new, 1)).unwrap());
    assert!(
        w.iter().any(
            |w| w.starts_with("buyer acme-ins: [buyers.filters] fields[2]")
                && w.contains("field \"age\"")
                && w.contains("never offered a lead")
        ),
        "{w:?}"
    );
    assert!(!warnings(&parse(CONTRACT).unwrap())
        .iter()
        .any(|w| w.contains("[buyers.filters]")),);
}

/// A filter's float compares with the decimal the file writes, which TOML's double would
/// round: `20.999999999999999999` is under 21 and `1_000.5` is 1000.5, in a value and in a
/// list alike; `check` then finds no contradiction a double would make up.
#[test]
fn field_filter_floats_keep_the_decimal_written() {
    let old = r#"fields = [ { field = "age", op = ">=", value = 21 }, { field = "insured", op = "==", value = true } ]"#;
    let new = r#"fields = [ { field = "age", op = "<", value = 20.999_999_999_999_999_999 }, { field = "n", op = "in", value = [1_000.5, +20.999999999999999999, 7] }, { field = "age", op = ">", value = 20.99999999999999999 } ]"#;
    assert!(CONTRACT.contains(old));
    let snap = parse(&CONTRACT.replacen(old, new, 1)).unwrap();
    let filters = &snap.buyers[snap.buyer_by_id("acme-ins").unwrap()]
        .rules
        .filters;
    let passes = |age: &str, n: &str| {
        let lead = crate::lead::Fields::from_json(&format!(
            r#"{{"state": "TX", "zip": "77002", "age": {age}, "n": {n}}}"#
        ))
        .unwrap();
        filters.matches(&lead)
    };
    // 20.99999999999999999 < age < 20.999999999999999999
    assert!(passes("20.999999999999999995", "20.999999999999999999"));
    assert!(passes("20.999999999999999995", "1000.5"));
    assert!(passes("20.999999999999999995", "7"));
    assert!(!passes("20.999999999999999995", "1000.50001"));
    assert!(!passes("20.999999999999999995", "21"));
    assert!(!passes("20.999999999999999999", "7"));
    assert!(!passes("21", "7"));
    assert!(!passes("20.99999999999999999", "7"));
    assert!(
        !warnings(&snap)
            .iter()
            .any(|w| w.contains("[buyers.filters]")),
        "{:?}",
        warnings(&snap)
    );
}

/// A raised `dedupe_entries` takes effect at a reload and is listed; a lowered one waits for
/// the next start and is not.
#[test]
fn a_lowered_dedupe_size_is_not_a_setting_that_took_effect() {
    let at = |n: usize| {
        load_ok(&CONTRACT.replace(
            "max_in_flight = 10000",
            &format!("max_in_flight = 10000\ndedupe_entries = {n}"),
        ))
    };
    let (small, big) = (at(4096), at(8192));
    assert_eq!(big.server.dedupe_entries, 8192);
    assert!(diff(&small, &big)
        .settings
        .contains(&"server.dedupe_entries".to_string()));
    assert!(!diff(&big, &small)
        .settings
        .contains(&"server.dedupe_entries".to_string()));
}
