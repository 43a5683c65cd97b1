//! Reissue request bodies as bytes: the canonical JSON that is sent and journaled, its digest
//! (how a rerun recognises a payload that already succeeded), and the `--dry-run` line.

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::manifest::Order;

/// Compact JSON with every object's keys sorted, so equal bodies are equal bytes whatever order
/// they were built in.
pub fn canonical_json(body: &Value) -> String {
    let mut out = Vec::with_capacity(1024);
    write_canonical(body, &mut out);
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Keys and scalars are written by serde_json straight into `out`: no string per value.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(key, out);
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_json(scalar, out),
    }
}

fn write_json(value: &(impl serde::Serialize + ?Sized), out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, value)
        .expect("a string or JSON scalar serialises into memory without error");
}

/// The SHA-256 of the canonical JSON, as lowercase hex.
pub fn digest(canonical: &str) -> String {
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// The reissue URL for an order.
pub fn reissue_url(base_url: &str, order_id: u64) -> String {
    format!(
        "{}/order/certificate/{order_id}/reissue",
        base_url.trim_end_matches('/')
    )
}

/// One `--dry-run` line: `{"order_id":…,"method":"POST","url":…,"body":{…}}`, no newline.
pub fn dry_run_line(base_url: &str, order: &Order) -> String {
    format!(
        "{{\"order_id\":{},\"method\":\"POST\",\"url\":{},\"body\":{}}}",
        order.order_id,
        Value::from(reissue_url(base_url, order.order_id)),
        canonical_json(&order.body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_is_compact_and_sorted_at_every_level() {
        let mut inner = serde_json::Map::new();
        inner.insert("z".into(), json!(1));
        inner.insert("a".into(), json!([true, "x\"y"]));
        let body = json!({"b": Value::Object(inner), "a": null});
        assert_eq!(
            canonical_json(&body),
            r#"{"a":null,"b":{"a":[true,"x\"y"],"z":1}}"#
        );
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            digest(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(digest("{}").len(), 64);
    }

    #[test]
    fn dry_run_line_follows_the_contract() {
        let order = Order {
            order_id: 123,
            line: 2,
            body: json!({"certificate": {"signature_hash": "sha256", "common_name": "a.example"}}),
        };
        let line = dry_run_line("https://www.digicert.com/services/v2/", &order);
        assert_eq!(
            line,
            r#"{"order_id":123,"method":"POST","url":"https://www.digicert.com/services/v2/order/certificate/123/reissue","body":{"certificate":{"common_name":"a.example","signature_hash":"sha256"}}}"#
        );
        let parsed: Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(parsed["body"], order.body);
    }
}
