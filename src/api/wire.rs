//! CertCentral's JSON shapes, read leniently: unknown fields ignored, ids optional, `errors` as
//! a list or an object, `message` or the legacy `description`.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReissueResponse {
    #[serde(default)]
    pub requests: Vec<IdOnly>,
    pub certificate_id: Option<u64>,
    pub dcv_random_value: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct IdOnly {
    pub id: Option<u64>,
}

/// One error CertCentral returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct RawError {
    code: Option<String>,
    message: Option<String>,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawErrors {
    List(Vec<RawError>),
    One(RawError),
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    errors: RawErrors,
}

/// Reads `{"errors":[...]}`; anything else becomes one error carrying a bit of the body.
pub(crate) fn parse_errors(body: &[u8]) -> Vec<ServiceError> {
    let convert = |raw: RawError| ServiceError {
        code: raw.code.unwrap_or_default(),
        message: raw.message.or(raw.description).unwrap_or_default(),
    };
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            errors: RawErrors::List(list),
        }) => list.into_iter().map(convert).collect(),
        Ok(ErrorBody {
            errors: RawErrors::One(one),
        }) => vec![convert(one)],
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(200).collect();
            if text.trim().is_empty() {
                Vec::new()
            } else {
                vec![ServiceError {
                    code: String::new(),
                    message: text.trim().to_owned(),
                }]
            }
        }
    }
}

/// `GET /order/certificate/{id}`, the parts reconciliation and campaigns read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OrderInfo {
    pub id: Option<u64>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub certificate: OrderCertificate,
    #[serde(default)]
    pub requests: Vec<OrderRequest>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct OrderCertificate {
    pub id: Option<u64>,
    pub common_name: Option<String>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    pub csr: Option<String>,
    pub signature_hash: Option<String>,
    pub server_platform: Option<ServerPlatform>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerPlatform {
    pub id: Option<i64>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct OrderRequest {
    pub id: Option<u64>,
    pub date: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub status: Option<String>,
}

/// `GET /order/certificate/{id}/reissue`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ReissueList {
    #[serde(default)]
    pub certificates: Vec<ReissueEntry>,
}

/// One reissue of an order.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReissueEntry {
    pub id: Option<u64>,
    pub status: Option<String>,
    pub date_created: Option<String>,
    pub csr: Option<String>,
}

/// `GET /order/certificate/status-changes`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct StatusChanges {
    #[serde(default)]
    pub orders: Vec<StatusChange>,
}

/// One order whose status changed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatusChange {
    pub order_id: Option<u64>,
    pub certificate_id: Option<u64>,
    pub status: Option<String>,
}

/// `PUT /order/certificate/{id}/check-dcv`, a 200 answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DcvCheck {
    pub order_status: Option<String>,
    pub certificate_id: Option<u64>,
    pub dcv_status: Option<String>,
    #[serde(default)]
    pub dns_name_validations: Vec<NameValidation>,
}

/// One name's DCV status in a check's answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NameValidation {
    pub dns_name: Option<String>,
    pub status: Option<String>,
}

/// `PUT /order/certificate/{id}/dcv-random-value`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DcvToken {
    pub dcv_random_value: Option<String>,
    pub expiration_date: Option<String>,
}

/// `GET /request/{id}`, or one entry of `GET /request`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RequestInfo {
    pub id: Option<u64>,
    pub date: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub status: Option<String>,
    pub order: Option<RequestOrder>,
}

/// The order a request is about.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RequestOrder {
    pub id: Option<u64>,
}

/// One page of `GET /request`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RequestPage {
    #[serde(default)]
    pub requests: Vec<RequestInfo>,
    #[serde(default)]
    pub page: Page,
}

/// Where a page sits in the whole list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Page {
    pub total: Option<u64>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_read_as_list_object_or_legacy_description() {
        let list = br#"{"errors":[{"code":"a","message":"x"},{"code":"b","message":"y"}]}"#;
        assert_eq!(parse_errors(list).len(), 2);
        let one = br#"{"errors":{"code":"a","description":"legacy"}}"#;
        assert_eq!(
            parse_errors(one),
            vec![ServiceError {
                code: "a".into(),
                message: "legacy".into()
            }]
        );
        assert_eq!(parse_errors(b"<html>bad gateway</html>")[0].code, "");
        assert!(parse_errors(b"").is_empty());
    }
}
