//! The orders the simulated account lists (`GET /order/certificate`): [`Scenario::orders`] of
//! them, with ids from [`FIRST_LISTED_ORDER`], made from the seed so a test can ask for the same
//! account twice. They vary the way a real estate does: products (single name, wildcard,
//! multi-domain, EV), names across several domains, signature hashes (SHA-1 among them, and
//! `SHA256` in capitals now and then, as some list responses write it), expiry from three months
//! ago to two years ahead, status, organization and container.
//!
//! The list answers `filters[KEY]=VALUE` for the documented keys, `sort`, `offset` and `limit`
//! (at most 1000), with `page.total`; a filter key it does not know is a 400, as a strict server
//! answers. What it shows is the order now: after a reissue is issued, the reissued names and
//! hash.

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde_json::{Value, json};
use time::{Date, OffsetDateTime};

use super::Scenario;
use super::routes::ApiError;
use super::state::{CertificateFields, Current, Shared, State};

/// The id of the first listed order; the others follow.
pub const FIRST_LISTED_ORDER: u64 = 10_000_001;
/// The most orders one page may hold (the page size every public client uses).
pub(crate) const MAX_PAGE: usize = 1000;
/// The page size when a request gives no `limit`.
const DEFAULT_PAGE: usize = 100;
/// Mixed into the seed, so the listed orders do not use up the fault draws' sequence.
const CATALOG_SALT: u64 = 0x6f72_6465_7273;

/// The filter keys of the documentation page.
const FILTER_KEYS: &[&str] = &[
    "id",
    "status",
    "organization_id",
    "product_name_id",
    "valid_till",
    "common_name",
    "domain_name",
    "date_created",
    "container_id",
    "serial_number",
    "certificate_id",
    "email",
    "search",
];
const SORT_KEYS: &[&str] = &[
    "id",
    "date_created",
    "valid_till",
    "common_name",
    "status",
    "product_name_id",
    "organization_id",
];

/// `(name_id, name, weight)`.
const PRODUCTS: &[(&str, &str, u32)] = &[
    ("ssl_plus", "Standard SSL", 35),
    ("ssl_basic", "Basic OV SSL", 15),
    ("ssl_wildcard", "Wildcard SSL", 15),
    ("ssl_multi_domain", "Multi-Domain SSL", 20),
    ("ssl_ev_plus", "EV SSL", 10),
    ("ssl_ev_multi_domain", "EV Multi-Domain SSL", 5),
];
const STATUSES: &[(&str, u32)] = &[
    ("issued", 80),
    ("pending", 4),
    ("revoked", 5),
    ("reissue_pending", 3),
    ("canceled", 3),
    ("rejected", 2),
    ("waiting_pickup", 3),
];
const HASHES: &[(&str, u32)] = &[("sha256", 80), ("sha384", 8), ("sha512", 4), ("sha1", 8)];
const ORGANIZATIONS: &[(u64, &str)] = &[
    (301_001, "Example Corp"),
    (301_002, "Example Shop GmbH"),
    (301_003, "Example Labs Ltd"),
];
const CONTAINERS: &[(u64, &str)] = &[
    (
        super::accounts::TOP_CONTAINER.0,
        super::accounts::TOP_CONTAINER.1,
    ),
    (202, "EU Division"),
    (203, "Lab"),
];
const DOMAINS: &[&str] = &[
    "example.com",
    "example.net",
    "example.org",
    "shop.example",
    "corp.example",
    "eu.example.com",
];
const HOSTS: &[&str] = &[
    "www", "api", "mail", "shop", "vpn", "portal", "cdn", "auth", "app", "intranet", "static",
    "status",
];
/// apache, nginx, other.
const PLATFORMS: &[i64] = &[2, 45, -1];

/// One listed order as it was placed; what it shows now is [`State::current`].
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub id: u64,
    /// Before any reissue; an `issued` order past its `valid_till` lists as `expired`.
    pub status: &'static str,
    /// Lowercase hash and the names of the certificate the order holds.
    pub fields: CertificateFields,
    /// The hash as the list writes it (sometimes in capitals).
    pub listed_hash: String,
    pub product: (&'static str, &'static str),
    pub organization: (u64, &'static str),
    pub container: (u64, &'static str),
    pub valid_from: OffsetDateTime,
    pub valid_till: OffsetDateTime,
    pub date_created: OffsetDateTime,
}

impl Listed {
    /// The order's status on `today`, before any reissue.
    pub(crate) fn status_on(&self, today: Date) -> &'static str {
        if self.status == "issued" && self.valid_till.date() < today {
            "expired"
        } else {
            self.status
        }
    }
}

/// Every listed order, by id.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    orders: Vec<Listed>,
}

impl Catalog {
    /// `count` orders from `seed`; `now` is when the simulator started.
    pub(crate) fn generate(count: u64, seed: u64, now: OffsetDateTime) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ CATALOG_SALT);
        let orders = (0..count)
            .map(|index| listed(&mut rng, index, now))
            .collect();
        Self { orders }
    }

    pub(crate) fn get(&self, order_id: u64) -> Option<&Listed> {
        let index = order_id.checked_sub(FIRST_LISTED_ORDER)?;
        self.orders.get(usize::try_from(index).ok()?)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Listed> {
        self.orders.iter()
    }
}

fn pick<'a, T>(rng: &mut StdRng, table: &'a [(T, u32)]) -> &'a T {
    let total: u32 = table.iter().map(|(_, weight)| weight).sum();
    let mut draw = rng.random_range(0..total);
    for (value, weight) in table {
        if draw < *weight {
            return value;
        }
        draw -= weight;
    }
    &table[table.len() - 1].0
}

fn one_of<'a, T>(rng: &mut StdRng, table: &'a [T]) -> &'a T {
    &table[rng.random_range(0..table.len())]
}

fn listed(rng: &mut StdRng, index: u64, now: OffsetDateTime) -> Listed {
    let products: Vec<((&str, &str), u32)> = PRODUCTS
        .iter()
        .map(|(id, name, weight)| ((*id, *name), *weight))
        .collect();
    let product = *pick(rng, &products);
    let status = *pick(rng, STATUSES);
    let hash = *pick(rng, HASHES);
    // Unique per order: host word and a number from the index, on a drawn domain.
    let hosts = HOSTS.len() as u64;
    let host = format!(
        "{}{}",
        HOSTS[usize::try_from(index % hosts).unwrap_or(0)],
        index / hosts + 1
    );
    let domain = *one_of(rng, DOMAINS);
    let base = format!("{host}.{domain}");
    let (common_name, dns_names) = match product.0 {
        "ssl_wildcard" => {
            let wildcard = format!("*.{base}");
            (wildcard.clone(), vec![wildcard, base])
        }
        "ssl_multi_domain" | "ssl_ev_multi_domain" => {
            let mut names = vec![base.clone()];
            for _ in 0..rng.random_range(1..=4) {
                let name = format!("{host}.{}", one_of(rng, DOMAINS));
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            (base, names)
        }
        _ if rng.random::<f64>() < 0.5 => (
            base.clone(),
            vec![base.clone(), format!("{host}-alt.{domain}")],
        ),
        _ => (base.clone(), vec![base]),
    };
    let listed_hash = if hash == "sha256" && rng.random::<f64>() < 0.1 {
        hash.to_ascii_uppercase()
    } else {
        hash.to_owned()
    };
    let valid_till = now + time::Duration::days(rng.random_range(-90..=730));
    let valid_from = valid_till - time::Duration::days(rng.random_range(90..=397));
    let date_created = valid_from - time::Duration::hours(rng.random_range(1..=72));
    Listed {
        id: FIRST_LISTED_ORDER + index,
        status,
        fields: CertificateFields {
            common_name,
            dns_names,
            signature_hash: hash.to_owned(),
            server_platform_id: *one_of(rng, PLATFORMS),
            key_size: if rng.random::<f64>() < 0.8 {
                2048
            } else {
                4096
            },
        },
        listed_hash,
        product,
        organization: *one_of(rng, ORGANIZATIONS),
        container: *one_of(rng, CONTAINERS),
        valid_from,
        valid_till,
        date_created,
    }
}

/// What one listed order shows now, as the list and its filters see it.
struct Row<'a> {
    listed: &'a Listed,
    current: Current,
    status: &'a str,
    signature_hash: String,
    today: Date,
}

impl<'a> Row<'a> {
    fn new(listed: &'a Listed, current: Current, today: Date) -> Self {
        let reissued = current.certificate_id != current.initial_certificate_id;
        let signature_hash = if reissued {
            current.fields.signature_hash.clone()
        } else {
            listed.listed_hash.clone()
        };
        Self {
            listed,
            status: current.status,
            current,
            signature_hash,
            today,
        }
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.current.fields.common_name.as_str())
            .chain(self.current.fields.dns_names.iter().map(String::as_str))
    }

    fn to_json(&self) -> Value {
        let valid_till = self.current.valid_till.date();
        let days_remaining = (valid_till - self.today).whole_days().max(0);
        json!({
            "id": self.listed.id,
            "certificate": {
                "id": self.current.certificate_id,
                "common_name": self.current.fields.common_name,
                "dns_names": self.current.fields.dns_names,
                "valid_till": super::state::date(self.current.valid_till),
                "days_remaining": days_remaining,
                "signature_hash": self.signature_hash,
            },
            "status": self.status,
            "is_renewed": false,
            "date_created": super::state::date_time(self.listed.date_created),
            "organization": {"id": self.listed.organization.0, "name": self.listed.organization.1},
            "container": {"id": self.listed.container.0, "name": self.listed.container.1},
            "product": {
                "name_id": self.listed.product.0,
                "name": self.listed.product.1,
                "type": "ssl_certificate",
            },
            "validity_years": 1,
        })
    }

    fn sort_value(&self, key: &str) -> SortValue {
        match key {
            "date_created" => SortValue::Time(self.listed.date_created),
            "valid_till" => SortValue::Time(self.current.valid_till),
            "common_name" => SortValue::Text(self.current.fields.common_name.to_ascii_lowercase()),
            "status" => SortValue::Text(self.status.to_owned()),
            "product_name_id" => SortValue::Text(self.listed.product.0.to_owned()),
            "organization_id" => SortValue::Number(self.listed.organization.0),
            _ => SortValue::Number(self.listed.id),
        }
    }

    /// Whether the row passes one filter; the value was checked when the query was read.
    fn matches(&self, key: &str, value: &str) -> bool {
        let number = || value.parse::<u64>().ok();
        match key {
            "id" => number() == Some(self.listed.id),
            // Documented: "issued" also matches expired orders whose certificate was issued.
            "status" => self.status == value || (value == "issued" && self.status == "expired"),
            "organization_id" => number() == Some(self.listed.organization.0),
            "container_id" => number() == Some(self.listed.container.0),
            "certificate_id" => number() == Some(self.current.certificate_id),
            "product_name_id" => self.listed.product.0 == value,
            "common_name" => self.current.fields.common_name.eq_ignore_ascii_case(value),
            "domain_name" => self.names().any(|name| name.eq_ignore_ascii_case(value)),
            "serial_number" => self.current.serial_number.eq_ignore_ascii_case(value),
            "valid_till" => {
                date_condition(value).is_some_and(|c| c.holds(self.current.valid_till.date()))
            }
            "date_created" => {
                date_condition(value).is_some_and(|c| c.holds(self.listed.date_created.date()))
            }
            // The simulated orders carry no e-mail addresses.
            "email" => false,
            "search" => {
                let name = self.current.fields.common_name.to_ascii_lowercase();
                match value.strip_prefix('%') {
                    Some(part) => name.contains(&part.to_ascii_lowercase()),
                    None => name == value.to_ascii_lowercase(),
                }
            }
            _ => true,
        }
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SortValue {
    Number(u64),
    Text(String),
    Time(OffsetDateTime),
}

/// Inclusive bounds on a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateCondition {
    from: Option<Date>,
    to: Option<Date>,
}

impl DateCondition {
    fn holds(self, date: Date) -> bool {
        self.from.is_none_or(|from| date >= from) && self.to.is_none_or(|to| date <= to)
    }
}

/// `YYYY-MM-DD` (that day), `A...B` (inclusive), or `>`, `>=`, `<`, `<=` before a date.
fn date_condition(value: &str) -> Option<DateCondition> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = |text: &str| Date::parse(text.trim(), format).ok();
    if let Some((from, to)) = value.split_once("...") {
        return Some(DateCondition {
            from: Some(day(from)?),
            to: Some(day(to)?),
        });
    }
    let (from, to) = if let Some(rest) = value.strip_prefix(">=") {
        (Some(day(rest)?), None)
    } else if let Some(rest) = value.strip_prefix('>') {
        (Some(day(rest)?.next_day()?), None)
    } else if let Some(rest) = value.strip_prefix("<=") {
        (None, Some(day(rest)?))
    } else if let Some(rest) = value.strip_prefix('<') {
        (None, Some(day(rest)?.previous_day()?))
    } else {
        let day = day(value)?;
        (Some(day), Some(day))
    };
    Some(DateCondition { from, to })
}

/// A list request's query, checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ListQuery {
    /// `(key, value)`, in the order given.
    filters: Vec<(String, String)>,
    /// `(key, descending)`.
    sort: Vec<(String, bool)>,
    offset: usize,
    limit: usize,
}

impl ListQuery {
    /// Reads `filters[KEY]=VALUE`, `sort`, `offset` and `limit`; other parameters are ignored.
    pub(crate) fn parse(query: Option<&str>, scenario: &Scenario) -> Result<Self, ApiError> {
        let mut parsed = Self {
            limit: DEFAULT_PAGE,
            sort: vec![("id".to_owned(), true)],
            ..Self::default()
        };
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if let Some(key) = name
                .strip_prefix("filters[")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                let unknown = !FILTER_KEYS.contains(&key)
                    || scenario.refused_list_filters.iter().any(|k| k == key);
                if unknown {
                    return Err(ApiError::new(
                        "invalid_filter",
                        format!("filters[{key}] is not a valid filter."),
                    ));
                }
                check_filter(key, &value)?;
                if !scenario.ignored_list_filters.iter().any(|k| k == key) {
                    parsed.filters.push((key.to_owned(), value.into_owned()));
                }
                continue;
            }
            match name.as_ref() {
                "offset" => {
                    parsed.offset = value
                        .parse()
                        .map_err(|_| ApiError::invalid("offset", "must be a whole number"))?;
                }
                "limit" => {
                    parsed.limit = value
                        .parse()
                        .ok()
                        .filter(|limit| (1..=MAX_PAGE).contains(limit))
                        .ok_or_else(|| {
                            ApiError::invalid("limit", &format!("must be from 1 to {MAX_PAGE}"))
                        })?;
                }
                "sort" => {
                    parsed.sort = value
                        .split(',')
                        .map(|field| {
                            let (key, descending) = match field.strip_prefix('-') {
                                Some(key) => (key, true),
                                None => (field, false),
                            };
                            if SORT_KEYS.contains(&key) {
                                Ok((key.to_owned(), descending))
                            } else {
                                Err(ApiError::invalid(
                                    "sort",
                                    &format!("cannot sort by {key:?}"),
                                ))
                            }
                        })
                        .collect::<Result<_, _>>()?;
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

/// A filter value of the right kind for its key.
fn check_filter(key: &str, value: &str) -> Result<(), ApiError> {
    let bad = |what: &str| Err(ApiError::invalid(&format!("filters[{key}]"), what));
    match key {
        "id" | "organization_id" | "container_id" | "certificate_id"
            if value.parse::<u64>().is_err() =>
        {
            bad("must be a whole number")
        }
        "valid_till" | "date_created" if date_condition(value).is_none() => {
            bad("must be a date (yyyy-MM-dd), a range A...B, or a date after >, >=, < or <=")
        }
        _ => Ok(()),
    }
}

/// `GET /order/certificate`: the listed orders that pass every filter, sorted, one page.
pub(crate) fn list(
    shared: &Shared,
    state: &mut State,
    query: Option<&str>,
    now_us: u64,
) -> Result<Value, ApiError> {
    let query = ListQuery::parse(query, &shared.scenario)?;
    let today = shared.clock.date_time(now_us).date();
    let mut rows: Vec<Row<'_>> = Vec::new();
    for listed in shared.catalog.iter() {
        let current = state.current(shared, listed.id, now_us);
        let row = Row::new(listed, current, today);
        if query
            .filters
            .iter()
            .all(|(key, value)| row.matches(key, value))
        {
            rows.push(row);
        }
    }
    rows.sort_by(|a, b| {
        query
            .sort
            .iter()
            .map(|(key, descending)| {
                let order = a.sort_value(key).cmp(&b.sort_value(key));
                if *descending { order.reverse() } else { order }
            })
            .find(|order| order.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let orders: Vec<Value> = rows
        .iter()
        .skip(query.offset)
        .take(query.limit)
        .map(Row::to_json)
        .collect();
    Ok(json!({
        "orders": orders,
        "page": {"total": rows.len(), "limit": query.limit, "offset": query.offset},
    }))
}

/// Every listed order as the list shows it now, by id (for tests).
pub(crate) fn snapshot(shared: &Shared, state: &mut State, now_us: u64) -> Vec<Value> {
    let today = shared.clock.date_time(now_us).date();
    shared
        .catalog
        .iter()
        .map(|listed| Row::new(listed, state.current(shared, listed.id, now_us), today).to_json())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(count: u64, seed: u64) -> Catalog {
        let now = time::macros::datetime!(2026-12-01 12:00 UTC);
        Catalog::generate(count, seed, now)
    }

    #[test]
    fn one_seed_makes_one_account_and_another_seed_another() {
        let a = catalog(200, 1);
        let b = catalog(200, 1);
        let c = catalog(200, 2);
        let names = |c: &Catalog| -> Vec<Vec<String>> {
            c.iter().map(|o| o.fields.dns_names.clone()).collect()
        };
        assert_eq!(names(&a), names(&b));
        assert_ne!(names(&a), names(&c));
        assert_eq!(
            a.get(FIRST_LISTED_ORDER).map(|o| o.id),
            Some(FIRST_LISTED_ORDER)
        );
        assert!(a.get(FIRST_LISTED_ORDER + 200).is_none());
        assert!(a.get(1).is_none());
    }

    #[test]
    fn the_orders_vary_in_every_way_a_filter_looks_at() {
        let catalog = catalog(2500, 0);
        let distinct = |f: &dyn Fn(&Listed) -> String| {
            catalog
                .iter()
                .map(f)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        };
        assert_eq!(distinct(&|o| o.product.0.to_owned()), PRODUCTS.len());
        assert_eq!(distinct(&|o| o.status.to_owned()), STATUSES.len());
        assert_eq!(distinct(&|o| o.fields.signature_hash.clone()), HASHES.len());
        assert!(catalog.iter().any(|o| o.listed_hash == "SHA256"));
        assert_eq!(
            distinct(&|o| o.organization.0.to_string()),
            ORGANIZATIONS.len()
        );
        assert_eq!(distinct(&|o| o.container.0.to_string()), CONTAINERS.len());
        assert_eq!(
            distinct(&|o| o.fields.common_name.clone()),
            2500,
            "common names are unique"
        );
        let now = time::macros::date!(2026 - 12 - 01);
        assert!(catalog.iter().any(|o| o.status_on(now) == "expired"));
        assert!(
            catalog
                .iter()
                .any(|o| o.fields.common_name.starts_with("*."))
        );
        assert!(catalog.iter().any(|o| o.fields.dns_names.len() > 2));
    }

    #[test]
    fn date_conditions_read_days_ranges_and_comparisons() {
        let d = |text: &str| {
            Date::parse(
                text,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .expect("date")
        };
        let holds =
            |condition: &str, day: &str| date_condition(condition).expect(condition).holds(d(day));
        assert!(holds("2026-01-02", "2026-01-02"));
        assert!(!holds("2026-01-02", "2026-01-03"));
        assert!(holds("2026-01-01...2026-01-31", "2026-01-31"));
        assert!(!holds("2026-01-01...2026-01-31", "2026-02-01"));
        assert!(holds(">2026-01-01", "2026-01-02"));
        assert!(!holds(">2026-01-01", "2026-01-01"));
        assert!(holds(">=2026-01-01", "2026-01-01"));
        assert!(holds("<2026-01-01", "2025-12-31"));
        assert!(!holds("<2026-01-01", "2026-01-01"));
        assert!(holds("<=2026-01-01", "2026-01-01"));
        assert!(date_condition("soon").is_none());
        assert!(date_condition("2026-13-01").is_none());
    }

    #[test]
    fn unknown_or_refused_filters_and_oversized_pages_are_refused() {
        let scenario = Scenario {
            refused_list_filters: vec!["domain_name".into()],
            ignored_list_filters: vec!["container_id".into()],
            ..Scenario::default()
        };
        let parse = |q: &str| ListQuery::parse(Some(q), &scenario);
        assert!(parse("filters%5Bsignature_hash%5D=sha1").is_err());
        assert!(parse("filters[domain_name]=a.example.com").is_err());
        assert!(parse("limit=1001").is_err());
        assert!(parse("limit=0").is_err());
        assert!(parse("sort=colour").is_err());
        assert!(parse("filters[id]=x").is_err());
        assert!(parse("filters[valid_till]=tomorrow").is_err());
        let query = parse("filters[status]=issued&filters[container_id]=202&limit=1000&offset=2000&sort=-valid_till,id&other=1")
            .expect("valid query");
        assert_eq!(query.filters, [("status".to_owned(), "issued".to_owned())]);
        assert_eq!((query.offset, query.limit), (2000, 1000));
        assert_eq!(
            query.sort,
            [("valid_till".to_owned(), true), ("id".to_owned(), false)]
        );
        assert_eq!(
            ListQuery::parse(None, &scenario).expect("empty").limit,
            DEFAULT_PAGE
        );
    }
}
