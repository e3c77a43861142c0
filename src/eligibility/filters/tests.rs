use super::*;
use serde_json::{json, Map, Value};

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

fn compile_err(toml_text: &str) -> FilterError {
    let cfg: FiltersConfig = toml::from_str(toml_text).unwrap();
    Filters::compile(&cfg).unwrap_err()
}

/// One predicate `field op value` tested against a lead holding `field = lead_value`
/// (`None` = field absent).
fn pred(op: &str, value: &str, lead_value: Option<Value>) -> bool {
    let f = filters(&format!(
        "fields = [ {{ field = \"x\", op = \"{op}\", value = {value} }} ]"
    ));
    let mut m = Map::new();
    if let Some(v) = lead_value {
        m.insert("x".to_string(), v);
    }
    f.matches(&Fields::from_map(&m))
}

#[test]
fn empty_filters_accept_everything() {
    let f = filters("");
    assert!(f.matches(&lead(json!({}))));
    assert!(f.matches(&lead(json!({"state": "zz", "zip": 1}))));
    assert!(Filters::any().matches(&lead(json!({"state": "TX"}))));
}

#[test]
fn states_are_case_insensitive_two_letter_codes() {
    let f = filters(r#"states = ["TX", "ok", "La"]"#);
    assert!(f.matches(&lead(json!({"state": "TX"}))));
    assert!(f.matches(&lead(json!({"state": "tx"}))));
    assert!(f.matches(&lead(json!({"state": " Ok "}))));
    assert!(f.matches(&lead(json!({"state": "la"}))));
    assert!(!f.matches(&lead(json!({"state": "CA"}))));
    assert!(!f.matches(&lead(json!({"state": "Texas"}))));
    assert!(!f.matches(&lead(json!({"state": 12}))));
    assert!(!f.matches(&lead(json!({}))));
    assert_eq!(
        f.check(&lead(json!({"state": "CA"}))),
        Err(FilterMiss::State)
    );
}

#[test]
fn bad_states_name_the_entry() {
    let e = compile_err(r#"states = ["TX", "Texas"]"#);
    assert_eq!(e.key(), "states[1]");
    assert!(e.to_string().starts_with("states[1]: \"Texas\""), "{e}");
    assert_eq!(compile_err(r#"states = ["T1"]"#).key(), "states[0]");
}

#[test]
fn zip_prefixes_match_strings_and_numbers() {
    let f = filters(r#"zip_prefixes = ["770", "750", "070"]"#);
    assert!(f.matches(&lead(json!({"zip": "77002"}))));
    assert!(f.matches(&lead(json!({"zip": "75001-1234"}))));
    assert!(f.matches(&lead(json!({"zip": 77002}))));
    // A numeric ZIP lost its leading zero: read it as five digits.
    assert!(f.matches(&lead(json!({"zip": 7002}))));
    assert!(f.matches(&lead(json!({"zip": " 07002 "}))));
    assert!(!f.matches(&lead(json!({"zip": "78701"}))));
    assert!(!f.matches(&lead(json!({"zip": "77"}))));
    assert!(!f.matches(&lead(json!({"zip": 77.5}))));
    assert!(!f.matches(&lead(json!({"zip": -77002}))));
    assert!(!f.matches(&lead(json!({"zip": null}))));
    assert!(!f.matches(&lead(json!({}))));
    assert_eq!(f.check(&lead(json!({"zip": "1"}))), Err(FilterMiss::Zip));
}

#[test]
fn zip_prefixes_of_mixed_lengths_and_what_can_never_match() {
    let f = filters(r#"zip_prefixes = ["9", "100", "10001"]"#);
    assert!(f.matches(&lead(json!({"zip": "90210"}))));
    assert!(f.matches(&lead(json!({"zip": "10001"}))));
    assert!(f.matches(&lead(json!({"zip": "10099-1234"}))));
    assert!(!f.matches(&lead(json!({"zip": "20002"}))));
    assert_eq!(
        compile_err(r#"zip_prefixes = ["770", ""]"#).key(),
        "zip_prefixes[1]"
    );
    // A lead's zip is five digits or ZIP+4: letters, spaces or a sixth digit never match.
    for bad in ["77 0", "M5V", "77a", "770021"] {
        let e = compile_err(&format!("zip_prefixes = [\"{bad}\"]"));
        assert_eq!(e.key(), "zip_prefixes[0]", "{bad}");
        assert!(e.to_string().contains("1 to 5 digits"), "{e}");
    }
    // Two letters that are no USPS code never match a lead either.
    for bad in ["XX", "ZZ", "Texas"] {
        let e = compile_err(&format!("states = [\"{bad}\"]"));
        assert_eq!(e.key(), "states[0]", "{bad}");
    }
    assert!(filters(r#"states = [" tx", "PR", "dc"]"#).matches(&lead(json!({"state": "TX"}))));
}

#[test]
fn equality_on_numbers_strings_and_bools() {
    assert!(pred("==", "34", Some(json!(34))));
    assert!(!pred("==", "34", Some(json!(35))));
    assert!(pred("==", "34", Some(json!(34.0))));
    assert!(
        pred("==", "34", Some(json!("34"))),
        "a number sent as a string compares as a number"
    );
    assert!(pred("==", "34.5", Some(json!("34.5"))));
    assert!(pred("==", "\"auto\"", Some(json!("auto"))));
    assert!(
        pred("==", "\"auto\"", Some(json!("Auto"))),
        "strings compare without ASCII case"
    );
    assert!(
        pred("==", "\"auto\"", Some(json!(" AUTO "))),
        "and without surrounding space"
    );
    assert!(!pred("==", "\"auto\"", Some(json!("autos"))));
    assert!(
        pred("not_in", "[\"commercial\"]", Some(json!("personal"))),
        "not_in keeps what it does not list"
    );
    assert!(
        !pred("not_in", "[\"commercial\"]", Some(json!("Commercial"))),
        "an exclusion is not slipped past by case"
    );
    assert!(pred("in", "[\"auto\", \"home\"]", Some(json!("HOME"))));
    assert!(pred("==", "true", Some(json!(" TRUE "))));
    assert!(
        !pred("==", "\"0770\"", Some(json!("770"))),
        "two strings compare as strings"
    );
    assert!(
        pred("==", "\"34\"", Some(json!(34))),
        "a numeric string value against a JSON number"
    );
    assert!(pred("==", "true", Some(json!(true))));
    assert!(!pred("==", "true", Some(json!(false))));
    assert!(pred("==", "true", Some(json!("true"))));
    assert!(!pred("==", "true", Some(json!("yes"))));
    // And the other way round: a word `"true"` in the filter meets a lead's `true`.
    assert!(pred("==", "\"true\"", Some(json!(true))));
    assert!(pred("==", "\" FALSE\"", Some(json!(false))));
    assert!(pred("!=", "\"true\"", Some(json!(false))));
    assert!(!pred("==", "\"yes\"", Some(json!(true))));
    assert!(!pred("!=", "\"yes\"", Some(json!(true))));
    assert!(pred("in", "[\"true\", \"maybe\"]", Some(json!(true))));
}

#[test]
fn inequality() {
    assert!(pred("!=", "34", Some(json!(35))));
    assert!(!pred("!=", "34", Some(json!(34))));
    assert!(!pred("!=", "34", Some(json!("34"))));
    assert!(pred("!=", "\"home\"", Some(json!("auto"))));
    assert!(pred("!=", "false", Some(json!(true))));
}

#[test]
fn ordering_operators() {
    for (op, v, want) in [
        ("<", 20, true),
        ("<", 21, false),
        ("<=", 21, true),
        ("<=", 22, false),
        (">", 22, true),
        (">", 21, false),
        (">=", 21, true),
        (">=", 20, false),
    ] {
        assert_eq!(pred(op, "21", Some(json!(v))), want, "{v} {op} 21");
        assert_eq!(
            pred(op, "21", Some(json!(v.to_string()))),
            want,
            "\"{v}\" {op} 21"
        );
    }
    // Decimals against integers, exactly.
    assert!(pred(">=", "100", Some(json!(100.0))));
    assert!(!pred(">=", "100", Some(json!(99.99))));
    assert!(pred(">", "99.5", Some(json!(100))));
    assert!(!pred(">", "100.5", Some(json!(100))));
    assert!(!pred(
        "<",
        "9007199254740993",
        Some(json!(9007199254740994i64))
    ));
    assert!(pred(
        ">",
        "9007199254740992.0",
        Some(json!(9007199254740993i64))
    ));
    // Numeric strings on both sides compare as numbers, other strings in byte order.
    assert!(pred("<", "\"10\"", Some(json!("9"))));
    // A number written as a string is a number: words are not on its scale, whatever their
    // bytes (`"unknown" >= "21"` in byte order).
    for word in [
        "unknown", "N/A", "abc", "3abc", "21abc", "inf", "NaN", "infinity",
    ] {
        for op in ["<", "<=", ">", ">="] {
            assert!(!pred(op, "\"21\"", Some(json!(word))), "{word} {op} \"21\"");
        }
    }
    assert!(pred(">=", "\"21\"", Some(json!("34"))));
    assert!(pred(">=", "\"21\"", Some(json!(34))));
    assert!(pred(">=", "\"2024-01-01\"", Some(json!("2024-06-30"))));
    assert!(!pred(">=", "\"2024-01-01\"", Some(json!("2023-12-31"))));
}

/// One predicate `x op value` against a lead `{"x": <lead_text>}`, the number's text as sent.
fn pred_text(op: &str, value: &str, lead_text: &str) -> bool {
    let f = filters(&format!(
        "fields = [ {{ field = \"x\", op = \"{op}\", value = {value} }} ]"
    ));
    let lead = Fields::from_json(&format!("{{\"x\": {lead_text}}}")).unwrap();
    f.matches(&lead)
}

#[test]
fn numbers_compare_by_the_decimal_written_without_rounding() {
    // Under 21 by less than a double can tell: still under.
    for under in [
        "20.999999999999999999",
        "\"20.999999999999999999\"",
        "2.0999999999999999999e1",
        "209.99999999999999999e-1",
    ] {
        assert!(!pred_text(">=", "21", under), "{under} >= 21");
        assert!(pred_text("<", "21", under), "{under} < 21");
        assert!(pred_text("!=", "21", under), "{under} != 21");
        assert!(!pred_text("==", "21", under), "{under} == 21");
    }
    // Equal values written apart.
    for same in [
        "21", "21.0", "21.000", "2.1e1", "2.10E+1", "210e-1", "0.021e3",
    ] {
        assert!(pred_text("==", "21", same), "{same} == 21");
        assert!(pred_text(">=", "21.0", same), "{same} >= 21.0");
        assert!(!pred_text("!=", "21", same), "{same} != 21");
    }
    // A float operand is the decimal written, not its binary neighbour.
    assert!(pred_text("==", "0.1", "0.1"));
    assert!(pred_text(">", "0.1", "0.1000000000000000000001"));
    assert!(pred_text("<", "0.1", "0.09999999999999999999"));
    // Signs, zeros and far exponents.
    assert!(pred_text("==", "0", "-0"));
    assert!(pred_text("==", "0", "0e99999999999999999999"));
    assert!(pred_text("<", "0", "-1e-99999999999999999999"));
    assert!(pred_text(">", "0", "1e-99999999999999999999"));
    // A lead's number beyond a double is refused at the door; a filter's, as a string, orders.
    assert!(pred_text("<", "\"1e400\"", "1e300"));
    assert!(pred_text(">", "\"-1e99999999999999999999\"", "-1e300"));
    assert!(pred_text(">", "9223372036854775807", "1e300"));
    assert!(pred_text(">", "-5", "-4.99999999999999999999"));
    assert!(pred_text("<", "-5", "-5.00000000000000000001"));
    // Integers past 64 bits, exactly.
    assert!(pred_text(
        ">",
        "\"123456789012345678901234567890\"",
        "123456789012345678901234567891"
    ));
    assert!(!pred_text(
        "==",
        "9223372036854775807",
        "9223372036854775808"
    ));
}

#[test]
fn type_mismatches_fail_every_operator() {
    for op in ["==", "!=", "<", "<=", ">", ">="] {
        assert!(
            !pred(op, "21", Some(json!("twenty"))),
            "{op} against a word"
        );
        assert!(!pred(op, "21", Some(json!(true))), "{op} against a bool");
        assert!(!pred(op, "21", Some(json!([21]))), "{op} against a list");
        assert!(
            !pred(op, "21", Some(json!({"v": 21}))),
            "{op} against an object"
        );
    }
    // A number written as a string is a number for equality too: a word is of another type.
    for word in ["unknown", "N/A", "thirty", "30abc", "", "030", "0770"] {
        for op in ["==", "!="] {
            assert!(!pred(op, "\"30\"", Some(json!(word))), "{word} {op} \"30\"");
        }
        assert!(
            !pred("not_in", "[\"30\", \"40\"]", Some(json!(word))),
            "{word}"
        );
        assert!(!pred("in", "[\"30\", \"40\"]", Some(json!(word))), "{word}");
    }
    // A string with a leading zero is a code, as a post is checked against its ping: not
    // on a number's scale, whichever way the number is written.
    assert!(!pred("==", "30", Some(json!("030"))));
    assert!(!pred(">", "\"30\"", Some(json!("0770"))));
    assert!(pred("==", "\"0770\"", Some(json!("0770"))));
    assert!(!pred("==", "\"0770\"", Some(json!(770))));
    assert!(!pred("!=", "\"0770\"", Some(json!(770))));
    assert!(!pred("!=", "\"0770\"", Some(json!("770"))));
    assert!(pred("!=", "\"auto\"", Some(json!("0770"))));
    // A lead's number written as a string is of another type than a word, as a JSON number is.
    for op in ["==", "!=", "<", "<=", ">", ">="] {
        assert!(
            !pred(op, "\"auto\"", Some(json!("30"))),
            "\"30\" {op} \"auto\""
        );
        assert!(!pred(op, "\"auto\"", Some(json!(30))), "30 {op} \"auto\"");
    }
    assert!(!pred("not_in", "[\"auto\"]", Some(json!("-5"))));
    assert!(
        pred("!=", "\"30\"", Some(json!("30.0"))),
        "two numeric strings, as written"
    );
    assert!(pred("==", "\"30\"", Some(json!(30))));
    assert!(!pred("!=", "\"30\"", Some(json!(" 30 "))));
    assert!(pred("!=", "\"30\"", Some(json!("31"))));
    assert!(pred("not_in", "[\"30\", \"40\"]", Some(json!("35"))));
    assert!(pred("in", "[\"30\", \"40\"]", Some(json!(40.0))));
    assert!(!pred("==", "\"auto\"", Some(json!(5))));
    assert!(!pred("!=", "\"auto\"", Some(json!(5))));
    assert!(!pred("!=", "true", Some(json!(1))));
    assert!(!pred("not_in", "[\"a\", \"b\"]", Some(json!(5))));
    assert!(!pred("in", "[1, 2]", Some(json!("one"))));
}

#[test]
fn missing_or_null_fields_fail_all_but_exists_false() {
    for (op, value) in [
        ("==", "1"),
        ("!=", "1"),
        ("<", "1"),
        ("<=", "1"),
        (">", "1"),
        (">=", "1"),
        ("in", "[1]"),
        ("not_in", "[1]"),
        ("exists", "true"),
    ] {
        assert!(!pred(op, value, None), "{op} on a missing field");
        assert!(!pred(op, value, Some(Value::Null)), "{op} on a null field");
    }
    assert!(pred("exists", "false", None));
    assert!(pred("exists", "false", Some(Value::Null)));
}

#[test]
fn exists() {
    assert!(pred("exists", "true", Some(json!(0))));
    assert!(pred("exists", "true", Some(json!(""))));
    assert!(pred("exists", "true", Some(json!(false))));
    assert!(!pred("exists", "false", Some(json!("x"))));
    // `exists` without a value means `exists = true`.
    let f = filters(r#"fields = [ { field = "email", op = "exists" } ]"#);
    assert!(f.matches(&lead(json!({"email": "a@b.c"}))));
    assert!(!f.matches(&lead(json!({"phone": "1"}))));
}

#[test]
fn in_and_not_in() {
    assert!(pred("in", "[\"auto\", \"home\"]", Some(json!("home"))));
    assert!(!pred("in", "[\"auto\", \"home\"]", Some(json!("life"))));
    assert!(pred("in", "[18, 21, 25]", Some(json!(21))));
    assert!(pred("in", "[18, 21, 25]", Some(json!("21"))));
    assert!(!pred("in", "[18, 21, 25]", Some(json!(22))));
    assert!(pred("not_in", "[\"auto\", \"home\"]", Some(json!("life"))));
    assert!(!pred("not_in", "[\"auto\", \"home\"]", Some(json!("auto"))));
    assert!(
        pred("not_in", "[1, \"a\"]", Some(json!("b"))),
        "comparable with one element is enough"
    );
    assert!(pred("in", "[true]", Some(json!(true))));
}

#[test]
fn every_predicate_must_hold() {
    let f = filters(
        r#"states = ["TX"]
           fields = [ { field = "age", op = ">=", value = 21 }, { field = "insured", op = "==", value = true } ]"#,
    );
    assert!(f.matches(&lead(json!({"state": "TX", "age": 34, "insured": true}))));
    assert_eq!(
        f.check(&lead(json!({"state": "TX", "age": 19, "insured": true}))),
        Err(FilterMiss::Field(0))
    );
    assert_eq!(
        f.check(&lead(json!({"state": "TX", "age": 34, "insured": false}))),
        Err(FilterMiss::Field(1))
    );
    assert_eq!(f.fields().len(), 2);
    assert_eq!(f.fields()[0].field(), "age");
    assert_eq!(f.fields()[0].op(), Op::Ge);
}

#[test]
fn compile_errors_name_key_and_reason() {
    let e = compile_err(
        r#"fields = [ { field = "age", op = ">=", value = 21 }, { field = "name", op = "=~", value = "x" } ]"#,
    );
    assert_eq!(e.to_string(), "fields[1].op: unknown operator \"=~\" (expected ==, !=, <, <=, >, >=, in, not_in or exists)");
    assert_eq!(
        compile_err(r#"fields = [ { field = "age", op = ">=" } ]"#).key(),
        "fields[0].value"
    );
    assert_eq!(
        compile_err(r#"fields = [ { field = " ", op = "==", value = 1 } ]"#).key(),
        "fields[0].field"
    );
    for bad in [
        r#"{ field = "a", op = "in", value = 1 }"#,
        r#"{ field = "a", op = "in", value = [] }"#,
        r#"{ field = "a", op = "not_in", value = [1, [2]] }"#,
        r#"{ field = "a", op = ">", value = true }"#,
        r#"{ field = "a", op = "exists", value = 1 }"#,
        r#"{ field = "a", op = "==", value = [1] }"#,
        r#"{ field = "a", op = "==", value = { b = 1 } }"#,
        r#"{ field = "a", op = "==", value = nan }"#,
        r#"{ field = "a", op = "<", value = 1979-05-27 }"#,
    ] {
        let e = compile_err(&format!("fields = [ {bad} ]"));
        assert_eq!(e.key(), "fields[0].value", "{bad}: {e}");
    }
}

#[test]
fn lists_over_their_limit_are_refused() {
    let states: Vec<String> = (0..=MAX_STATES).map(|_| "\"TX\"".to_string()).collect();
    let e = compile_err(&format!("states = [{}]", states.join(",")));
    assert_eq!(
        e,
        FilterError::TooMany {
            key: "states",
            limit: MAX_STATES
        }
    );
}

#[test]
fn the_example_config_filters_compile() {
    let f = filters(
        r#"states = ["TX", "OK", "LA"]
           zip_prefixes = ["770", "750"]
           fields = [ { field = "age", op = ">=", value = 21 }, { field = "insured", op = "==", value = true } ]"#,
    );
    let ok = lead(
        json!({"first_name": "Ana", "state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}),
    );
    assert!(f.matches(&ok));
    let mut wrong_state = ok.clone();
    wrong_state.insert("state".into(), json!("CA"));
    assert!(!f.matches(&wrong_state));
}

#[test]
fn state_codes_round_trip() {
    let tx = StateCode::parse("tx").unwrap();
    assert_eq!(&tx.as_bytes(), b"TX");
    assert!(tx.index() < STATE_CODES);
    assert_eq!(StateCode::parse("ZZ").unwrap().index(), STATE_CODES - 1);
    assert_eq!(StateCode::parse("T"), None);
}

#[test]
fn a_dotted_field_reads_into_nested_objects() {
    let f = filters(
        r#"fields = [ { field = "vehicle.year", op = ">=", value = 2015 },
                      { field = "vehicle.owner.state", op = "in", value = ["TX", "OK"] } ]"#,
    );
    let nested = |year: Value, state: &str| {
        lead(
            json!({"zip": "77002", "vehicle": {"make": "Ford", "year": year,
                    "owner": {"state": state, "since": null}}}),
        )
    };
    assert!(f.matches(&nested(json!(2018), "TX")));
    assert!(f.matches(&nested(json!("2015"), "OK")));
    assert!(!f.matches(&nested(json!(2009), "TX")));
    assert!(!f.matches(&nested(json!(2018), "CA")));
    // Absent at any step: the predicate reads no value.
    assert!(!f.matches(&lead(json!({"vehicle": {"make": "Ford"}}))));
    assert!(!f.matches(&lead(json!({"vehicle": "Ford"}))));
    assert!(!f.matches(&lead(json!({"vehicle": {"year": 2018, "owner": "x"}}))));
    // A top-level key with the dotted name is read first.
    let flat = lead(json!({"vehicle.year": 2018, "vehicle.owner.state": "OK",
                           "vehicle": {"year": 1990}}));
    assert!(f.matches(&flat));

    let l = nested(json!(2018), "TX");
    let at = |path: &str| l.get_path(path).map(|v| v.field().to_value());
    assert_eq!(at("vehicle.make"), Some(json!("Ford")));
    assert_eq!(at("vehicle.owner.since"), Some(json!(null)));
    assert_eq!(
        l.get_path("vehicle.owner"),
        Some(PathValue::Field(Field::Object(
            r#"{"state":"TX","since":null}"#
        )))
    );
    assert_eq!(at("vehicle.model"), None);
    assert_eq!(at("zip.code"), None);
    assert_eq!(
        l.get_path("zip"),
        Some(PathValue::Field(Field::Str("77002")))
    );
}

/// A nested string is compared decoded, as the lead's own strings are: quotes, backslashes
/// and control characters (which a nested object keeps escaped) as well as `\u` escapes.
#[test]
fn nested_strings_with_escapes_are_compared_decoded() {
    let l = Fields::from_json(
        r#"{"home": {"city": "San Jos\u00e9", "note": "a \"quoted\" word", "dir": "C:\\tmp"}}"#,
    )
    .unwrap();
    let at = |path: &str| l.get_path(path).map(|v| v.field().to_value());
    assert_eq!(at("home.city"), Some(json!("San José")));
    assert_eq!(at("home.note"), Some(json!("a \"quoted\" word")));
    assert_eq!(at("home.dir"), Some(json!("C:\\tmp")));
    assert_eq!(
        l.get_path("home.note"),
        Some(PathValue::Decoded("a \"quoted\" word".into()))
    );
    let f = filters(
        r#"fields = [ { field = "home.note", op = "==", value = 'a "quoted" word' },
                      { field = "home.dir", op = "in", value = ['C:\tmp', 'D:\tmp'] },
                      { field = "home.city", op = "==", value = "san josé" } ]"#,
    );
    assert!(f.matches(&l));
    let f = filters(r#"fields = [ { field = "home.dir", op = "==", value = 'C:\\tmp' } ]"#);
    assert!(!f.matches(&l));
}

/// Lead values to try a field's predicates with: absent, null, numbers on and around every
/// bound the cases below use, as JSON numbers and as strings, words and booleans.
fn probe_values() -> Vec<Option<Value>> {
    let mut out = vec![
        None,
        Some(Value::Null),
        Some(json!(true)),
        Some(json!("abc")),
    ];
    for tenths in -300..=700 {
        let x = f64::from(tenths) / 10.0;
        out.push(Some(json!(x)));
        out.push(Some(json!(x.to_string())));
        if tenths % 10 == 0 {
            out.push(Some(json!(tenths / 10)));
        }
    }
    out
}

fn any_value_matches(f: &Filters) -> bool {
    probe_values().into_iter().any(|v| {
        let mut m = Map::new();
        if let Some(v) = v {
            m.insert("x".to_string(), v);
        }
        m.insert("y".to_string(), json!(5));
        f.matches(&Fields::from_map(&m))
    })
}

#[test]
fn filters_no_value_can_meet_are_found_and_others_are_not() {
    // (fields, index of the first predicate that cannot hold with those before it)
    let never = [
        (
            r#"{ field = "x", op = ">", value = 50 }, { field = "x", op = "<", value = 20 }"#,
            1,
        ),
        (
            r#"{ field = "x", op = ">=", value = 8 }, { field = "x", op = "==", value = 7 }"#,
            1,
        ),
        (
            r#"{ field = "x", op = "==", value = 7 }, { field = "x", op = "==", value = 8 }"#,
            1,
        ),
        (
            r#"{ field = "x", op = ">", value = 10 }, { field = "x", op = "<=", value = 10 }"#,
            1,
        ),
        (
            r#"{ field = "x", op = ">=", value = 10 }, { field = "x", op = "<", value = 10.0 }"#,
            1,
        ),
        (
            r#"{ field = "x", op = "<", value = "21" }, { field = "x", op = ">", value = 30 }"#,
            1,
        ),
        (
            r#"{ field = "y", op = ">", value = 1 }, { field = "x", op = ">", value = 5 },
               { field = "x", op = "<", value = 9 }, { field = "x", op = ">", value = 9.5 }"#,
            3,
        ),
        (
            r#"{ field = "x", op = "exists", value = false }, { field = "x", op = "!=", value = 3 }"#,
            1,
        ),
        (
            r#"{ field = "x", op = "in", value = [1, 2] }, { field = "x", op = "exists", value = false }"#,
            1,
        ),
        (
            r#"{ field = "x", op = "exists" }, { field = "x", op = "exists", value = false }"#,
            1,
        ),
    ];
    for (fields, at) in never {
        let f = filters(&format!("fields = [ {fields} ]"));
        assert_eq!(f.contradictions(), vec![at], "{fields}");
        assert!(!any_value_matches(&f), "{fields} matched a lead");
    }
    let possible = [
        r#"{ field = "x", op = ">", value = 20 }, { field = "x", op = "<", value = 50 }"#,
        r#"{ field = "x", op = ">=", value = 10 }, { field = "x", op = "<=", value = 10 }"#,
        r#"{ field = "x", op = "==", value = 7 }, { field = "x", op = ">=", value = 7.0 }"#,
        r#"{ field = "x", op = ">", value = 50 }, { field = "y", op = "<", value = 20 }"#,
        r#"{ field = "x", op = "exists", value = false }, { field = "x", op = "exists", value = false }"#,
        r#"{ field = "x", op = "==", value = "7" }, { field = "x", op = "==", value = 7.0 }"#,
        r#"{ field = "x", op = ">", value = 1 }, { field = "x", op = "!=", value = 2 }"#,
        r#"{ field = "x", op = ">", value = 1 }, { field = "x", op = "in", value = [0, 5] }"#,
    ];
    for fields in possible {
        let f = filters(&format!("fields = [ {fields} ]"));
        assert_eq!(f.contradictions(), Vec::<usize>::new(), "{fields}");
        assert!(any_value_matches(&f), "{fields} matched no lead");
    }
}
