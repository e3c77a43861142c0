use super::*;
use crate::test_rng::Rng;
use serde_json::json;

#[test]
fn keeps_types_order_and_text() {
    let f = Fields::from_json(
        r#"{"zip":"07302","age":42,"big":12345678901234567890,"ok":true,"no":false,
           "none":null,"esc":"a\"b\u00e9","list":["x", 1],"obj":{"a": [1, 2]}}"#,
    )
    .unwrap();
    assert_eq!(f.len(), 9);
    assert_eq!(f.get("zip"), Some(Field::Str("07302")));
    assert_eq!(f.get("age"), Some(Field::Num("42")));
    assert_eq!(f.get("big"), Some(Field::Num("12345678901234567890")));
    assert_eq!(f.get("ok"), Some(Field::Bool(true)));
    assert_eq!(f.get("no"), Some(Field::Bool(false)));
    assert_eq!(f.get("none"), Some(Field::Null));
    assert_eq!(f.get("esc"), Some(Field::Str("a\"bé")));
    assert_eq!(f.get("list"), Some(Field::Array(r#"["x",1]"#)));
    assert_eq!(f.get("obj"), Some(Field::Object(r#"{"a":[1,2]}"#)));
    assert_eq!(f.get("missing"), None);
    let keys: Vec<&str> = f.iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        ["zip", "age", "big", "ok", "no", "none", "esc", "list", "obj"]
    );
    let mut out = Vec::new();
    f.write_json(&mut out);
    let back: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        back,
        json!({"zip":"07302","age":42,"big":12345678901234567890u64,"ok":true,"no":false,
               "none":null,"esc":"a\"bé","list":["x",1],"obj":{"a":[1,2]}})
    );
    assert_eq!(Fields::from_map(&f.to_map()), f);
}

#[test]
fn a_repeated_key_keeps_its_place_and_last_value() {
    let f = Fields::from_json(r#"{"a":1,"b":2,"a":"three"}"#).unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!(f.get("a"), Some(Field::Str("three")));
    let keys: Vec<&str> = f.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["a", "b"]);
}

#[test]
fn a_key_repeated_past_the_limit_is_refused() {
    let mut text = String::from("{");
    for i in 0..=MAX_FIELDS {
        if i > 0 {
            text.push(',');
        }
        text.push_str("\"a\":1");
    }
    text.push('}');
    let err = Fields::from_json(&text).unwrap_err().to_string();
    assert!(err.starts_with(TOO_MANY_FIELDS), "{err}");
}

#[test]
fn keys_with_escapes_and_empty_objects() {
    let f = Fields::from_json(r#"{"caf\u00e9":"x","a\"b":true,"":null}"#).unwrap();
    assert_eq!(f.get("café"), Some(Field::Str("x")));
    assert_eq!(f.get("a\"b"), Some(Field::Bool(true)));
    assert_eq!(f.get(""), Some(Field::Null));
    let mut out = Vec::new();
    f.write_json(&mut out);
    assert_eq!(
        Fields::from_json(std::str::from_utf8(&out).unwrap()).unwrap(),
        f
    );
    let empty = Fields::from_json(" { } ").unwrap();
    assert!(empty.is_empty());
    let mut out = Vec::new();
    empty.write_json(&mut out);
    assert_eq!(out, b"{}");
    assert!(Fields::from_json("{} x").is_err(), "trailing text");
}

#[test]
fn refuses_non_objects_and_too_many_fields() {
    assert!(Fields::from_json("[1]").is_err());
    assert!(Fields::from_json("\"x\"").is_err());
    let many: Map<String, Value> = (0..=MAX_FIELDS)
        .map(|i| (format!("f{i}"), json!(i)))
        .collect();
    let text = Value::Object(many).to_string();
    assert!(Fields::from_json(&text).is_err());
}

#[test]
fn select_and_helpers() {
    let f = Fields::from_json(
        r#"{"state":"TX","zip":"77002","phone":"512","list":["a","b"],"mixed":["a",1]}"#,
    )
    .unwrap();
    let s = f.select(["zip", "state", "nope"]);
    let keys: Vec<&str> = s.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["zip", "state"]);
    assert_eq!(
        f.get("list").and_then(|v| v.array_strings()),
        Some(vec!["a".to_string(), "b".to_string()])
    );
    assert!(f.get("list").is_some_and(|v| v.is_string_array()));
    assert!(!f.get("mixed").is_some_and(|v| v.is_string_array()));
    assert!(Field::Str("  ").is_blank() && Field::Null.is_blank());
    assert!(!Field::Num("0").is_blank());
    assert_eq!(Field::Str("a\"b").to_string(), r#""a\"b""#);
    assert_eq!(serde_json::to_value(&f).unwrap()["list"], json!(["a", "b"]));
}

fn json_of(f: &Fields) -> String {
    let mut out = Vec::new();
    f.write_json(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn the_text_is_the_compact_json_a_buyer_is_sent() {
    let f = Fields::from_json(
        r#"{ "zip" : "07302", "age": 42 , "ok":true, "list": [ "x" , 1 ], "esc": "a\"b\u00e9",
            "caf\u00e9": null }"#,
    )
    .unwrap();
    assert_eq!(
        json_of(&f),
        r#"{"zip":"07302","age":42,"ok":true,"list":["x",1],"esc":"a\"bé","café":null}"#
    );
    assert_eq!(f.member_json("zip"), Some(r#""zip":"07302""#));
    assert_eq!(f.member_json("list"), Some(r#""list":["x",1]"#));
    assert_eq!(f.member_json("esc"), Some(r#""esc":"a\"bé""#));
    assert_eq!(f.member_json("café"), Some(r#""café":null"#));
    assert_eq!(f.member_json("nope"), None);
    assert_eq!(json_of(&Fields::default()), "{}");
    assert_eq!(json_of(&Fields::from_json("{}").unwrap()), "{}");
    // A repeated key: one member, in the first one's place, with the last value.
    let f = Fields::from_json(r#"{"a":1,"b":"x\ny","a":"th\"ree"}"#).unwrap();
    assert_eq!(json_of(&f), r#"{"a":"th\"ree","b":"x\ny"}"#);
    assert_eq!(f.get("a"), Some(Field::Str("th\"ree")));
    assert_eq!(f.get("b"), Some(Field::Str("x\ny")));
}

#[test]
fn a_builder_matches_a_json_map_whatever_is_pushed() {
    // Keys and values with and without escapes, repeated keys (some colliding in the filter
    // that spares the search for a repeat), against serde_json's own map as the model.
    let keys = [
        "a",
        "b",
        "zip",
        "state",
        "a\"b",
        "caf\u{e9}",
        "",
        "tab\t",
        "k1",
        "k2",
        "1k",
        "ba",
    ];
    let strings = [
        "",
        "x",
        "07302",
        "a\"b",
        "line\nbreak",
        "\u{1}",
        "é€",
        "0123456789abcdef",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..5_000 {
        let mut b = FieldsBuilder::default();
        let mut model = Map::new();
        for _ in 0..rng.below(12) {
            let key = rng.pick(&keys);
            let value = match rng.below(6) {
                0 => Value::Null,
                1 => Value::Bool(rng.below(2) == 0),
                2 => json!(rng.below(1000)),
                3 => json!([rng.pick(&strings), 1]),
                4 => json!({ "in": rng.pick(&strings) }),
                _ => Value::String(rng.pick(&strings).to_string()),
            };
            assert!(b.push_value(key, &value));
            model.insert(key.to_string(), value);
        }
        let f = b.finish();
        let expected = Value::Object(model.clone());
        assert_eq!(json_of(&f), serde_json::to_string(&expected).unwrap());
        assert_eq!(f.to_map(), model);
        assert_eq!(f.len(), model.len());
        for (k, v) in &model {
            let member = f.member_json(k).unwrap();
            let one: Value = serde_json::from_str(&format!("{{{member}}}")).unwrap();
            assert_eq!(one, json!({ k.clone(): v.clone() }));
            assert_eq!(f.get(k).map(|x| x.to_value()), Some(v.clone()));
        }
        assert_eq!(Fields::from_json(&json_of(&f)).unwrap(), f);
    }
}
