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

/// An id CertCentral may write as a number or as a string of digits.
fn lenient_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(u64),
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Option::<Id>::deserialize(deserializer)? {
        Some(Id::Number(id)) => Some(id),
        Some(Id::Text(text)) => text.trim().parse().ok(),
        Some(Id::Other(_)) | None => None,
    })
}

/// `GET /user/me`: who the key belongs to.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserMe {
    #[serde(default, deserialize_with = "lenient_id")]
    pub id: Option<u64>,
    pub username: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub account_id: Option<u64>,
    pub container: Option<Named>,
    /// `null` is read as none.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub access_roles: Vec<Named>,
}

/// `GET /account`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AccountInfo {
    #[serde(default, deserialize_with = "lenient_id")]
    pub id: Option<u64>,
    /// `retail`, `enterprise` or `reseller`.
    pub cert_central_type: Option<String>,
}

/// `{"id": …, "name": …}`: a role, an organization, a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Named {
    #[serde(default, deserialize_with = "lenient_id")]
    pub id: Option<u64>,
    pub name: Option<String>,
}

/// One page of `GET /order/certificate`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OrderPage {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub orders: Vec<ListedOrder>,
    #[serde(default)]
    pub page: PageInfo,
}

/// Where a page sits in the whole list.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct PageInfo {
    #[serde(default, deserialize_with = "lenient_id")]
    pub total: Option<u64>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub limit: Option<u64>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub offset: Option<u64>,
}

/// One order of the list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListedOrder {
    #[serde(default, deserialize_with = "lenient_id")]
    pub id: Option<u64>,
    #[serde(default)]
    pub certificate: ListedCertificate,
    pub status: Option<String>,
    pub date_created: Option<String>,
    pub organization: Option<Named>,
    pub container: Option<Named>,
    pub product: Option<ListedProduct>,
}

/// The certificate an order of the list holds.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListedCertificate {
    #[serde(default, deserialize_with = "lenient_id")]
    pub id: Option<u64>,
    pub common_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub dns_names: Vec<String>,
    /// `yyyy-MM-dd`.
    pub valid_till: Option<String>,
    pub signature_hash: Option<String>,
}

/// The product of an order of the list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListedProduct {
    pub name_id: Option<String>,
    pub name: Option<String>,
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
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

    #[test]
    fn user_me_reads_ids_as_numbers_or_strings_and_null_roles_as_none() {
        let me: UserMe = serde_json::from_str(
            r#"{"id":"12","username":"jdoe","account_id":5550001,"access_roles":null,"extra":1}"#,
        )
        .expect("reads");
        assert_eq!((me.id, me.account_id), (Some(12), Some(5_550_001)));
        assert!(me.access_roles.is_empty());
        let me: UserMe = serde_json::from_str(r#"{"account_id":{"odd":true}}"#).expect("reads");
        assert_eq!(me.account_id, None);
    }

    #[test]
    fn an_order_page_reads_the_documented_shape() {
        let page: OrderPage = serde_json::from_str(
            r#"{"orders":[{"id":1,"certificate":{"id":2,"common_name":"a.example","dns_names":["a.example","b.example"],"valid_till":"2027-01-31","days_remaining":5,"signature_hash":"SHA256"},"status":"issued","organization":{"id":3,"name":"Org"},"container":{"id":4,"name":"Main"},"product":{"name_id":"ssl_plus","name":"Standard SSL","type":"ssl_certificate"}},{"id":9,"certificate":{"dns_names":null}}],"page":{"total":"2","limit":1000,"offset":0}}"#,
        )
        .expect("reads");
        assert_eq!(page.page.total, Some(2));
        assert_eq!(page.orders.len(), 2);
        assert_eq!(
            page.orders[0].certificate.dns_names,
            ["a.example", "b.example"]
        );
        assert_eq!(
            page.orders[0].container.as_ref().and_then(|c| c.id),
            Some(4)
        );
        assert!(page.orders[1].certificate.dns_names.is_empty());
    }
}
