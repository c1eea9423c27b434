//! Contract fixtures: what a peer (Harbor) sends and decodes, captured as JSON. What we send
//! must have the fixture's shape, or the peer fails to decode it.

use serde_json::Value;

/// Every field of `ours` exists in `fixture` at the same place, with the same JSON type
/// (array items are compared with the fixture's first). `at` names the document in messages.
pub fn assert_shape(ours: &Value, fixture: &Value, at: &str) {
    match (ours, fixture) {
        (Value::Object(o), Value::Object(f)) => {
            for (k, v) in o {
                let f = f
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}.{k} is not in the fixture"));
                assert_shape(v, f, &format!("{at}.{k}"));
            }
        }
        (Value::Array(o), Value::Array(f)) => {
            if let Some(first) = f.first() {
                for v in o {
                    assert_shape(v, first, &format!("{at}[]"));
                }
            }
        }
        (o, f) => assert_eq!(
            std::mem::discriminant(o),
            std::mem::discriminant(f),
            "{at}: {o} has another type than the fixture's {f}"
        ),
    }
}
