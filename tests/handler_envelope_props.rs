//! Whatever the host (or anyone on the port) sends, the envelope parser answers Ok or Err: it never panics.

use galbridge::functions::envelope::Invocation;
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON, biased towards the keys and shapes the host uses (so nested parsing paths are exercised).
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("Data".to_owned()),
        Just("timer".to_owned()),
        Just("req".to_owned()),
        Just("Method".to_owned()),
        Just("Query".to_owned()),
        Just("Headers".to_owned()),
        Just("Params".to_owned()),
        Just("Body".to_owned()),
        Just("ScheduleStatus".to_owned()),
        Just("IsPastDue".to_owned()),
        Just("Url".to_owned()),
        "[a-zA-Z]{0,6}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        Just(Value::String(
            "{\"Last\":null,\"Method\":\"POST\"}".to_owned()
        )),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner.clone(), 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
            // Objects sent as JSON strings, as old hosts do.
            prop::collection::btree_map(key.clone(), inner, 0..4).prop_map(|map| Value::String(
                Value::Object(map.into_iter().collect()).to_string()
            )),
        ]
    })
}

fn exercise(body: &[u8]) {
    if let Ok(invocation) = Invocation::parse(body) {
        let _ = invocation.timer("timer");
        if let Ok(request) = invocation.http_request("req") {
            let _ = request.path();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        exercise(value.to_string().as_bytes());
        let wrapped = serde_json::json!({ "Data": { "timer": value.clone(), "req": value } });
        exercise(wrapped.to_string().as_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise(&bytes);
    }
}
