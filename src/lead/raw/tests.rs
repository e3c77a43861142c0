use super::*;

#[test]
fn compacts_keeping_every_token_as_written() {
    let raw =
        "{ \"amount\" : 12345678901234567890123 ,\n \"rate\":3.14159265358979323846,\"e\":1e3,\
               \"neg0\" : -0, \"cents\":250000.10, \"s\":\"a\\u00e9 \\/ \\\"q\\\" , ]\",\
               \"arr\" : [ 18446744073709551616 , 0.30000000000000000001, [ ], { } ,null,true] }";
    assert_eq!(
        compact(raw).unwrap(),
        "{\"amount\":12345678901234567890123,\"rate\":3.14159265358979323846,\"e\":1e3,\
         \"neg0\":-0,\"cents\":250000.10,\"s\":\"a\\u00e9 \\/ \\\"q\\\" , ]\",\
         \"arr\":[18446744073709551616,0.30000000000000000001,[],{},null,true]}"
    );
    // The same value, read back.
    let a: serde_json::Value = serde_json::from_str(raw).unwrap();
    let b: serde_json::Value = serde_json::from_str(&compact(raw).unwrap()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn filters_members_and_items_at_any_depth() {
    let drop = |k: Option<&str>, v: &str| k == Some("secret") || v == "\"x\"";
    let raw = r#"{"a": 1e3, "secret": {"b": 1}, "list": ["x", "y", {"secret": 2, "c": 3}], "s\u0065cret": 4, "z": "x"}"#;
    let (text, dropped) = filtered(raw, &drop).unwrap();
    assert!(dropped);
    assert_eq!(text, r#"{"a":1e3,"list":["y",{"c":3}]}"#);
    let (text, dropped) = filtered(r#"["x"]"#, &drop).unwrap();
    assert!(dropped);
    assert_eq!(text, "[]");
    let (text, dropped) = filtered(r#"{"secret":1,"k":2}"#, &drop).unwrap();
    assert!(dropped);
    assert_eq!(text, r#"{"k":2}"#);
    let (_, dropped) = filtered(r#"{"k": [1, 2]}"#, &drop).unwrap();
    assert!(!dropped);
}

#[test]
fn text_that_is_not_json_gives_none() {
    for bad in [
        "",
        "{",
        "[1,",
        "{\"a\" 1}",
        "{\"a\":1} x",
        "\"open",
        "{1:2}",
    ] {
        assert_eq!(compact(bad), None, "{bad:?}");
    }
    let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
    assert_eq!(compact(&deep), None);
}
