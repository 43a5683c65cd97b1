//! The DCV token export (`report --dcv`): for every order whose reissue answer carried a
//! `dcv_random_value`, the token with its DCV method and the domains to publish it for, as CSV or
//! JSON that DNS or HTTP automation can read.
//!
//! The method and names come from the journaled payload, which is the reissue body that was
//! sent: `dcv_method` at the top, `certificate.common_name` and `certificate.dns_names` inside.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

/// The CSV columns, in order; JSON objects have the same keys.
pub const COLUMNS: [&str; 5] = [
    "order_id",
    "dcv_method",
    "dcv_random_value",
    "common_name",
    "dns_names",
];

/// One order's token and where it applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DcvRow {
    pub order_id: i64,
    /// `None` when the request named no method (CertCentral used the order's own).
    pub dcv_method: Option<String>,
    pub dcv_random_value: String,
    pub common_name: Option<String>,
    /// `;`-joined in CSV, an array in JSON.
    pub dns_names: Vec<String>,
}

/// Why a journaled payload cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DcvError {
    /// The payload column is not JSON; the journal was altered or is damaged.
    #[error("the journaled payload of order {order_id} is not JSON")]
    Payload {
        order_id: i64,
        #[source]
        source: serde_json::Error,
    },
    /// The CSV cannot be written.
    #[error("cannot write the DCV token CSV")]
    Csv(#[source] csv::Error),
    /// The JSON cannot be written.
    #[error("cannot write the DCV token JSON")]
    Json(#[source] std::io::Error),
}

impl DcvRow {
    /// The row for an order from the body it was sent with and the token CertCentral returned.
    pub fn from_payload(
        order_id: i64,
        payload: &str,
        dcv_random_value: String,
    ) -> Result<Self, DcvError> {
        let body: Value = serde_json::from_str(payload)
            .map_err(|source| DcvError::Payload { order_id, source })?;
        let certificate = &body["certificate"];
        let text = |value: &Value| value.as_str().map(str::to_owned);
        let dns_names = certificate["dns_names"]
            .as_array()
            .map(|names| names.iter().filter_map(text).collect())
            .unwrap_or_default();
        Ok(Self {
            order_id,
            dcv_method: text(&body["dcv_method"]),
            dcv_random_value,
            common_name: text(&certificate["common_name"]),
            dns_names,
        })
    }
}

pub fn write_csv(rows: &[DcvRow], out: impl Write) -> Result<(), DcvError> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(COLUMNS).map_err(DcvError::Csv)?;
    for row in rows {
        writer
            .write_record([
                row.order_id.to_string().as_str(),
                row.dcv_method.as_deref().unwrap_or_default(),
                &row.dcv_random_value,
                row.common_name.as_deref().unwrap_or_default(),
                &row.dns_names.join(";"),
            ])
            .map_err(DcvError::Csv)?;
    }
    writer
        .flush()
        .map_err(|e| DcvError::Csv(csv::Error::from(e)))?;
    Ok(())
}

pub fn write_json(rows: &[DcvRow], mut out: impl Write) -> Result<(), DcvError> {
    serde_json::to_writer_pretty(&mut out, rows)
        .map_err(|e| DcvError::Json(std::io::Error::from(e)))?;
    writeln!(out).map_err(DcvError::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = r#"{"certificate":{"common_name":"example.com","csr":"-----BEGIN CERTIFICATE REQUEST-----MII-----END CERTIFICATE REQUEST-----","dns_names":["example.com","www.example.com"],"signature_hash":"sha256"},"dcv_method":"dns-txt-token"}"#;

    fn row() -> DcvRow {
        DcvRow::from_payload(42, PAYLOAD, "tok3n".into()).expect("payload parses")
    }

    #[test]
    fn method_and_names_come_from_the_payload() {
        assert_eq!(
            row(),
            DcvRow {
                order_id: 42,
                dcv_method: Some("dns-txt-token".into()),
                dcv_random_value: "tok3n".into(),
                common_name: Some("example.com".into()),
                dns_names: vec!["example.com".into(), "www.example.com".into()],
            }
        );
    }

    #[test]
    fn a_payload_without_method_or_names_leaves_them_empty() {
        let row = DcvRow::from_payload(7, r#"{"certificate":{}}"#, "t".into()).expect("parses");
        assert_eq!(row.dcv_method, None);
        assert_eq!(row.common_name, None);
        assert!(row.dns_names.is_empty());
        assert!(DcvRow::from_payload(7, "not json", "t".into()).is_err());
    }

    #[test]
    fn csv_has_the_columns_and_joins_names_with_semicolons() {
        let mut out = Vec::new();
        write_csv(&[row()], &mut out).expect("csv");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "order_id,dcv_method,dcv_random_value,common_name,dns_names\n\
             42,dns-txt-token,tok3n,example.com,example.com;www.example.com\n"
        );
    }

    #[test]
    fn json_has_the_same_keys_and_names_as_an_array() {
        let mut out = Vec::new();
        write_json(&[row()], &mut out).expect("json");
        let value: Value = serde_json::from_slice(&out).expect("parses");
        let mut keys: Vec<&str> = value[0]
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut expected = COLUMNS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(
            value[0]["dns_names"],
            serde_json::json!(["example.com", "www.example.com"])
        );
        assert_eq!(value[0]["dcv_random_value"], "tok3n");
    }
}
