//! `select`: which of the account's orders a campaign is about. Lists the account's orders
//! (`GET /order/certificate`, every page, through the rate limiter), keeps those that match
//! every filter, and writes them as a manifest (`order_id,common_name,dns_names`) that `keygen`
//! and `run --fill-from-order` take.
//!
//! Filters whose server-side syntax is documented (reference/certcentral-notes.md, "List
//! orders") are also sent to CertCentral, so it lists less. Every filter is checked again here
//! on what comes back: a server that ignores a filter does not widen the selection, and one that
//! refuses a filter (400) is asked again with none, so it does not narrow it either.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::Date;

use crate::api::{Client, ListedOrder};
use crate::limiter::Limiter;
use crate::reads::{self, Attempt, ReadError};

/// Orders asked for per page: the most every public client asks for.
pub const PAGE_SIZE: u64 = 1000;

/// Statuses CertCentral is known to give an order (the list's `status`).
pub const KNOWN_STATUSES: &[&str] = &[
    "issued",
    "expired",
    "pending",
    "needs_approval",
    "reissue_pending",
    "waiting_pickup",
    "revoked",
    "rejected",
    "canceled",
];

/// Signature hashes CertCentral is known to list (SHA-1 on old orders).
pub const KNOWN_HASHES: &[&str] = &["sha1", "sha256", "sha384", "sha512"];

/// The columns of the manifest `select` writes.
pub const CSV_HEADER: [&str; 3] = ["order_id", "common_name", "dns_names"];

/// What an order must match, every filter at once; within a repeated filter, any value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Lowercase; empty matches any status.
    pub statuses: Vec<String>,
    /// Product `name_id`s, lowercase.
    pub products: Vec<String>,
    pub domains: Vec<DomainPattern>,
    /// `valid_till` earlier than this day.
    pub expires_before: Option<Date>,
    /// `valid_till` later than this day.
    pub expires_after: Option<Date>,
    /// Lowercase.
    pub signature_hashes: Vec<String>,
    pub organization: Option<u64>,
    pub container: Option<u64>,
}

/// A domain pattern: `*` matches any run of characters (dots too), case does not matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPattern(String);

/// A filter value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{value:?} is not a date (YYYY-MM-DD)")]
    Date { value: String },
    #[error("{value:?} is not a domain pattern (letters, digits, '-', '.', '_' and '*' wildcards)")]
    Domain { value: String },
    #[error("{value:?} is not a status, product or hash name (letters, digits and '_')")]
    Name { value: String },
    #[error("--expires-after {after} is not before --expires-before {before}: no order can match")]
    EmptyRange { after: Date, before: Date },
}

impl DomainPattern {
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let pattern = text.trim().to_ascii_lowercase();
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-._*".contains(c);
        if pattern.is_empty() || !pattern.chars().all(allowed) {
            return Err(FilterError::Domain {
                value: text.to_owned(),
            });
        }
        Ok(Self(pattern))
    }

    pub fn has_wildcard(&self) -> bool {
        self.0.contains('*')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` (any case) matches the pattern.
    pub fn matches(&self, name: &str) -> bool {
        glob_matches(self.0.as_bytes(), name.to_ascii_lowercase().as_bytes())
    }
}

/// `*` matches any run of bytes; everything else itself. Iterative, with one backtrack point:
/// linear in practice, and never recursive on hostile input.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<Date, FilterError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text.trim(), format).map_err(|_| FilterError::Date {
        value: text.to_owned(),
    })
}

/// A status, product `name_id` or hash: lowercase letters, digits and `_`.
pub fn parse_name(text: &str) -> Result<String, FilterError> {
    let name = text.trim().to_ascii_lowercase();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(FilterError::Name {
            value: text.to_owned(),
        });
    }
    Ok(name)
}

impl Filters {
    /// Refuses a date range no order can be in.
    pub fn check(&self) -> Result<(), FilterError> {
        match (self.expires_after, self.expires_before) {
            (Some(after), Some(before)) if after.next_day() >= Some(before) => {
                Err(FilterError::EmptyRange { after, before })
            }
            _ => Ok(()),
        }
    }

    /// Whether a listed order passes every filter.
    pub fn matches(&self, order: &ListedOrder) -> bool {
        let certificate = &order.certificate;
        let lower = |text: &Option<String>| text.as_deref().map(str::to_ascii_lowercase);
        let any_of = |wanted: &[String], value: Option<String>| {
            wanted.is_empty() || value.is_some_and(|value| wanted.contains(&value))
        };
        let valid_till = certificate
            .valid_till
            .as_deref()
            .and_then(|d| parse_date(d).ok());
        let names = || {
            certificate
                .common_name
                .iter()
                .chain(&certificate.dns_names)
                .map(String::as_str)
        };
        any_of(&self.statuses, lower(&order.status))
            && any_of(
                &self.products,
                order.product.as_ref().and_then(|p| lower(&p.name_id)),
            )
            && any_of(&self.signature_hashes, lower(&certificate.signature_hash))
            && (self.domains.is_empty()
                || self
                    .domains
                    .iter()
                    .any(|pattern| names().any(|name| pattern.matches(name))))
            && self
                .expires_before
                .is_none_or(|before| valid_till.is_some_and(|till| till < before))
            && self
                .expires_after
                .is_none_or(|after| valid_till.is_some_and(|till| till > after))
            && self
                .organization
                .is_none_or(|id| order.organization.as_ref().and_then(|o| o.id) == Some(id))
            && self
                .container
                .is_none_or(|id| order.container.as_ref().and_then(|c| c.id) == Some(id))
    }

    /// The filters CertCentral can apply itself, in their documented syntax: a status, product
    /// or domain only when one value is asked for (a list of values has no documented syntax),
    /// a domain only without wildcards. Dates and hashes have none documented.
    pub fn server_query(&self) -> Vec<(String, String)> {
        let mut query = Vec::new();
        let mut push = |key: &str, value: String| query.push((format!("filters[{key}]"), value));
        if let [status] = self.statuses.as_slice() {
            push("status", status.clone());
        }
        if let [product] = self.products.as_slice() {
            push("product_name_id", product.clone());
        }
        if let [domain] = self.domains.as_slice()
            && !domain.has_wildcard()
        {
            push("domain_name", domain.as_str().to_owned());
        }
        if let Some(id) = self.organization {
            push("organization_id", id.to_string());
        }
        if let Some(id) = self.container {
            push("container_id", id.to_string());
        }
        query
    }
}

/// One selected order, as the manifest and the JSON output carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selected {
    pub order_id: u64,
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub status: Option<String>,
    pub product: Option<String>,
    pub valid_till: Option<String>,
    pub signature_hash: Option<String>,
    pub organization_id: Option<u64>,
    pub container_id: Option<u64>,
}

impl Selected {
    fn from_listed(order_id: u64, order: ListedOrder) -> Self {
        Self {
            order_id,
            common_name: order.certificate.common_name,
            dns_names: order.certificate.dns_names,
            status: order.status,
            product: order.product.and_then(|p| p.name_id),
            valid_till: order.certificate.valid_till,
            signature_hash: order.certificate.signature_hash,
            organization_id: order.organization.and_then(|o| o.id),
            container_id: order.container.and_then(|c| c.id),
        }
    }
}

/// What a listing found.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Distinct orders listed.
    pub listed: u64,
    /// Listed orders that named no id (left out).
    pub without_id: u64,
    /// Pages read.
    pub pages: u64,
    /// The orders that matched every filter, in the order listed.
    pub matched: Vec<Selected>,
    /// The server refused the filters it was sent; everything was listed and filtered here.
    pub server_filters_refused: bool,
}

/// How the listing is going: orders read so far, and the server's total when it gave one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListProgress {
    pub read: u64,
    pub total: Option<u64>,
}

/// Why a selection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// The key was refused while listing.
    #[error("CertCentral refused the credentials while listing orders; nothing was written")]
    Credentials(#[source] ReadError),
    /// A page could not be had.
    #[error("cannot list the account's orders (page at offset {offset}); nothing was written")]
    List {
        offset: u64,
        #[source]
        source: ReadError,
    },
    /// The pages ended before the total the server gave.
    #[error(
        "CertCentral said the account holds {total} matching orders, but the pages ended after {read}; nothing was written (run select again)"
    )]
    Incomplete { read: u64, total: u64 },
}

/// Lists every page and keeps the orders that match `filters`; `progress` hears of each page;
/// every request is pushed onto `attempts`.
pub async fn select(
    client: &Client,
    limiter: &Limiter,
    give_up_after: std::time::Duration,
    filters: &Filters,
    attempts: &mut Vec<Attempt>,
    mut progress: impl FnMut(ListProgress),
) -> Result<Selection, SelectError> {
    let server_filters = filters.server_query();
    let mut selection = Selection::default();
    let mut seen = HashSet::new();
    let mut offset = 0;
    loop {
        let mut query = Vec::new();
        if !selection.server_filters_refused {
            query.clone_from(&server_filters);
            // By id: orders placed while the pages are read land at the end, not in between.
            query.push(("sort".into(), "id".into()));
        }
        query.push(("offset".into(), offset.to_string()));
        query.push(("limit".into(), PAGE_SIZE.to_string()));
        let page = match reads::read(limiter, give_up_after, attempts, || {
            client.list_orders(&query)
        })
        .await
        {
            Ok(page) => page,
            // A server that does not take a filter (or the sort) is asked for everything, once.
            Err(ReadError::Rejected(err))
                if offset == 0
                    && err.http_status() == Some(400)
                    && !selection.server_filters_refused =>
            {
                tracing::warn!(
                    "CertCentral refused the list's filters ({err}); listing every order and filtering here"
                );
                selection.server_filters_refused = true;
                continue;
            }
            Err(err @ ReadError::Credentials(_)) => return Err(SelectError::Credentials(err)),
            Err(source) => return Err(SelectError::List { offset, source }),
        };
        selection.pages += 1;
        let total = page.page.total;
        let count = u64::try_from(page.orders.len()).unwrap_or(u64::MAX);
        for order in page.orders {
            let Some(order_id) = order.id else {
                selection.without_id += 1;
                continue;
            };
            if !seen.insert(order_id) {
                continue;
            }
            selection.listed += 1;
            if filters.matches(&order) {
                selection
                    .matched
                    .push(Selected::from_listed(order_id, order));
            }
        }
        offset += count;
        progress(ListProgress {
            read: offset,
            total,
        });
        let more = match total {
            Some(total) => offset < total,
            None => count >= PAGE_SIZE,
        };
        if count == 0 || !more {
            if let Some(total) = total
                && offset < total
            {
                return Err(SelectError::Incomplete {
                    read: offset,
                    total,
                });
            }
            return Ok(selection);
        }
    }
}

/// How the selection is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The manifest: `order_id,common_name,dns_names` (`;` between DNS names).
    Csv,
    /// An array of objects with every field of [`Selected`].
    Json,
}

/// Writes the selection to `path` whole, or not at all: into a temporary file beside it, synced,
/// then renamed over it.
pub fn write(path: &Path, format: Format, orders: &[Selected]) -> Result<(), WriteError> {
    let io = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".reissuer-select-")
        .tempfile_in(&dir)
        .map_err(io)?;
    {
        let mut out = std::io::BufWriter::new(file.as_file_mut());
        match format {
            Format::Csv => write_csv(&mut out, orders).map_err(io)?,
            Format::Json => {
                serde_json::to_writer_pretty(&mut out, orders).map_err(|e| io(e.into()))?;
                writeln!(out).map_err(io)?;
            }
        }
        out.flush().map_err(io)?;
    }
    file.as_file().sync_all().map_err(io)?;
    file.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

fn write_csv(out: &mut impl Write, orders: &[Selected]) -> std::io::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(CSV_HEADER)?;
    for order in orders {
        csv.write_record([
            order.order_id.to_string(),
            order.common_name.clone().unwrap_or_default(),
            order.dns_names.join(";"),
        ])?;
    }
    csv.flush()
}

/// The selection file could not be written; nothing is left behind.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ListedCertificate, ListedProduct, Named};

    fn order(id: u64, status: &str, names: &[&str], hash: &str, till: &str) -> ListedOrder {
        ListedOrder {
            id: Some(id),
            certificate: ListedCertificate {
                id: Some(id * 10),
                common_name: names.first().map(|n| (*n).to_owned()),
                dns_names: names.iter().map(|n| (*n).to_owned()).collect(),
                valid_till: Some(till.to_owned()),
                signature_hash: Some(hash.to_owned()),
            },
            status: Some(status.to_owned()),
            date_created: None,
            organization: Some(Named {
                id: Some(3),
                name: None,
            }),
            container: Some(Named {
                id: Some(201),
                name: None,
            }),
            product: Some(ListedProduct {
                name_id: Some("ssl_plus".into()),
                name: None,
            }),
        }
    }

    fn domains(patterns: &[&str]) -> Vec<DomainPattern> {
        patterns
            .iter()
            .map(|p| DomainPattern::parse(p).expect("pattern"))
            .collect()
    }

    #[test]
    fn wildcards_match_any_run_of_characters_in_any_case() {
        let pattern = DomainPattern::parse("*.Example.com").expect("pattern");
        assert!(pattern.matches("www.example.com"));
        assert!(pattern.matches("a.b.EXAMPLE.com"));
        assert!(pattern.matches("*.example.com"));
        assert!(!pattern.matches("example.com"));
        assert!(!pattern.matches("www.example.com.evil"));
        let middle = DomainPattern::parse("shop*.example.*").expect("pattern");
        assert!(middle.matches("shop12.example.net"));
        assert!(!middle.matches("www.shop.example.net"));
        let exact = DomainPattern::parse("example.com").expect("pattern");
        assert!(exact.matches("EXAMPLE.COM") && !exact.matches("www.example.com"));
        assert!(
            DomainPattern::parse("*")
                .expect("pattern")
                .matches("anything")
        );
        assert!(DomainPattern::parse("exa mple.com").is_err());
        assert!(DomainPattern::parse("").is_err());
    }

    #[test]
    fn an_order_must_match_every_filter_and_any_value_of_one() {
        let sha1 = order(
            1,
            "issued",
            &["a.example.com", "b.example.net"],
            "SHA1",
            "2027-03-01",
        );
        let filters = Filters {
            statuses: vec!["issued".into(), "expired".into()],
            signature_hashes: vec!["sha1".into()],
            domains: domains(&["*.example.net"]),
            expires_before: Some(parse_date("2027-03-02").expect("date")),
            expires_after: Some(parse_date("2027-02-28").expect("date")),
            organization: Some(3),
            container: Some(201),
            products: vec!["ssl_plus".into()],
        };
        assert!(filters.matches(&sha1));
        let mut other = filters.clone();
        other.expires_before = Some(parse_date("2027-03-01").expect("date"));
        assert!(!other.matches(&sha1), "before is strictly before");
        let mut other = filters.clone();
        other.container = Some(202);
        assert!(!other.matches(&sha1));
        let mut other = filters.clone();
        other.statuses = vec!["revoked".into()];
        assert!(!other.matches(&sha1));
        let mut other = filters.clone();
        other.domains = domains(&["c.example.org", "a.example.com"]);
        assert!(other.matches(&sha1), "any domain pattern");
        assert!(Filters::default().matches(&sha1), "no filter matches all");
        let mut undated = sha1.clone();
        undated.certificate.valid_till = None;
        assert!(!filters.matches(&undated), "no expiry, no date match");
    }

    #[test]
    fn only_filters_with_a_documented_syntax_go_to_the_server() {
        let filters = Filters {
            statuses: vec!["issued".into()],
            products: vec!["ssl_plus".into(), "ssl_basic".into()],
            domains: domains(&["www.example.com"]),
            signature_hashes: vec!["sha1".into()],
            expires_before: Some(parse_date("2027-01-01").expect("date")),
            organization: Some(3),
            container: Some(201),
            ..Filters::default()
        };
        let keys: Vec<String> = filters.server_query().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "filters[status]",
                "filters[domain_name]",
                "filters[organization_id]",
                "filters[container_id]"
            ]
        );
        let wildcard = Filters {
            domains: domains(&["*.example.com"]),
            statuses: vec!["issued".into(), "expired".into()],
            ..Filters::default()
        };
        assert!(wildcard.server_query().is_empty());
    }

    #[test]
    fn an_empty_date_range_is_refused() {
        let filters = Filters {
            expires_after: Some(parse_date("2027-01-01").expect("date")),
            expires_before: Some(parse_date("2027-01-02").expect("date")),
            ..Filters::default()
        };
        assert!(
            filters.check().is_err(),
            "no day is after the 1st and before the 2nd"
        );
        let filters = Filters {
            expires_before: Some(parse_date("2027-01-03").expect("date")),
            ..filters
        };
        assert!(filters.check().is_ok());
        assert!(parse_date("2027-02-30").is_err());
        assert!(parse_name("issued").is_ok() && parse_name("is sued").is_err());
    }

    #[test]
    fn the_file_is_the_manifest_keygen_reads_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("selection.csv");
        let selected = vec![Selected {
            order_id: 7,
            common_name: Some("*.example.com".into()),
            dns_names: vec!["*.example.com".into(), "example.com".into()],
            status: None,
            product: None,
            valid_till: None,
            signature_hash: None,
            organization_id: None,
            container_id: None,
        }];
        write(&path, Format::Csv, &selected).expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "order_id,common_name,dns_names\n7,*.example.com,*.example.com;example.com\n"
        );
        write(&path, Format::Csv, &[]).expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "order_id,common_name,dns_names\n"
        );
        let missing = dir.path().join("no/such/dir/selection.csv");
        assert!(write(&missing, Format::Csv, &selected).is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["selection.csv"], "no temporary file left behind");
    }
}
