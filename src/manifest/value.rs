//! One field's value: from what the manifest wrote (a CSV cell, a TOML value, a `--set` text)
//! to a typed value that passed the field's own constraint. Rules across fields are in `rules.rs`.

use serde_json::Value;
use time::{Date, Duration, Month};

use super::fields::{Check, Field, Kind};

/// A value as the manifest wrote it, before it is checked against its field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    /// Untyped text (a CSV cell or a `--set` value): read according to the field's kind; a
    /// list's items are separated by `;`.
    Text(String),
    /// A cell of a `;`-separated CSV: read like `Text`, except that `;` already separates the
    /// cells, so a list's items are separated by `,` (or by `;` inside a quoted cell).
    TextCommaList(String),
    /// A TOML string.
    Str(String),
    /// A TOML integer.
    Int(i64),
    /// A TOML boolean.
    Bool(bool),
    /// A TOML array.
    List(Vec<Raw>),
    /// Any other TOML value: its type name, for the error message.
    Other(&'static str),
}

impl Raw {
    fn describe(&self) -> String {
        match self {
            Raw::Text(s) | Raw::TextCommaList(s) | Raw::Str(s) => format!("the string {s:?}"),
            Raw::Int(i) => format!("the integer {i}"),
            Raw::Bool(b) => format!("the boolean {b}"),
            Raw::List(_) => "an array".to_owned(),
            Raw::Other(kind) => (*kind).to_owned(),
        }
    }
}

/// A checked value, ready for the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Typed {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
}

impl Typed {
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Typed::Str(s) => Value::from(s.as_str()),
            Typed::Int(i) => Value::from(*i),
            Typed::Bool(b) => Value::from(*b),
            Typed::List(items) => Value::from(items.clone()),
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Typed::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is_true(&self) -> bool {
        matches!(self, Typed::Bool(true))
    }
}

/// Reads `raw` as a value of `field` and checks the field's constraint. `today` anchors
/// `custom_expiration_date`'s 397-day range.
pub(crate) fn convert(field: &Field, raw: Raw, today: Date) -> Result<Typed, String> {
    let typed = match to_kind(field, raw)? {
        Typed::Str(s) => Typed::Str(check_text(field, &s)?.unwrap_or(s)),
        Typed::List(items) => {
            if let Some(max) = field.max_items
                && items.len() > max
            {
                return Err(format!(
                    "has {} items; at most {max} allowed ({})",
                    items.len(),
                    field.rule
                ));
            }
            let checked = items
                .into_iter()
                .map(|item| Ok(check_text(field, &item)?.unwrap_or(item)))
                .collect::<Result<Vec<_>, String>>()?;
            Typed::List(checked)
        }
        Typed::Int(i) => match field.check {
            Check::Range(lo, hi) if !(lo..=hi).contains(&i) => {
                return Err(range_message(field, i, lo, hi));
            }
            _ => Typed::Int(i),
        },
        Typed::Bool(b) => Typed::Bool(b),
    };
    check_date(field, typed, today)
}

fn range_message(field: &Field, value: i64, lo: i64, hi: i64) -> String {
    let bound = if lo == hi {
        format!("must be {lo}")
    } else if hi == i64::MAX {
        format!("must be at least {lo}")
    } else {
        format!("must be between {lo} and {hi}")
    };
    if field.rule.is_empty() {
        format!("{value} is out of range: {bound}")
    } else {
        format!("{value} is out of range: {bound} ({})", field.rule)
    }
}

fn to_kind(field: &Field, raw: Raw) -> Result<Typed, String> {
    let wrong = |raw: &Raw| {
        format!(
            "expected {}, found {}",
            field.kind.describe(),
            raw.describe()
        )
    };
    match (field.kind, raw) {
        (Kind::Str, Raw::Text(s) | Raw::TextCommaList(s) | Raw::Str(s)) => {
            non_empty(s).map(Typed::Str)
        }
        (Kind::Int, Raw::Int(i)) => Ok(Typed::Int(i)),
        (Kind::Int, Raw::Text(s) | Raw::TextCommaList(s)) => s
            .parse::<i64>()
            .map(Typed::Int)
            .map_err(|_| format!("expected an integer, found {s:?}")),
        (Kind::Bool, Raw::Bool(b)) => Ok(Typed::Bool(b)),
        (Kind::Bool, Raw::Text(s) | Raw::TextCommaList(s)) => match s.to_ascii_lowercase().as_str()
        {
            "true" => Ok(Typed::Bool(true)),
            "false" => Ok(Typed::Bool(false)),
            _ => Err(format!("expected true or false, found {s:?}")),
        },
        (Kind::StrList, Raw::Text(s)) => split_list(&s, &[';']),
        (Kind::StrList, Raw::TextCommaList(s)) => split_list(&s, &[',', ';']),
        (Kind::StrList, Raw::List(items)) => {
            if items.is_empty() {
                return Err("empty list; leave the field out to not set it".to_owned());
            }
            items
                .into_iter()
                .map(|item| match item {
                    Raw::Str(s) => non_empty(s),
                    other => Err(format!(
                        "expected a list of strings, found an item that is {}",
                        other.describe()
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Typed::List)
        }
        (_, raw) => Err(wrong(&raw)),
    }
}

/// A list written as text, its items separated by any of `separators` (the first is the one
/// the manifest's format documents).
fn split_list(s: &str, separators: &[char]) -> Result<Typed, String> {
    let items: Vec<String> = s
        .split(separators)
        .map(|item| item.trim().to_owned())
        .collect();
    if items.iter().any(String::is_empty) {
        let separator = separators.first().copied().unwrap_or(';');
        return Err(format!(
            "empty item in the {separator}-separated list {s:?} (a doubled or trailing \
             {separator})"
        ));
    }
    Ok(Typed::List(items))
}

fn non_empty(s: String) -> Result<String, String> {
    if s.is_empty() {
        Err("empty string; leave the field out to not set it".to_owned())
    } else {
        Ok(s)
    }
}

/// Checks one string (or list item) against the field's constraint; `Some` when the value is
/// sent in a normalised spelling.
fn check_text(field: &Field, s: &str) -> Result<Option<String>, String> {
    // The CSR is multi-line PEM by nature; it is checked by the CSR parser instead.
    if field.check != Check::Csr
        && let Some(c) = s.chars().find(|c| c.is_control())
    {
        return Err(format!("contains the control character {c:?}"));
    }
    match field.check {
        Check::OneOf(allowed) => match allowed.iter().find(|a| a.eq_ignore_ascii_case(s)) {
            Some(canonical) => Ok(Some((*canonical).to_owned())),
            None => Err(format!(
                "{s:?} is not one of {} ({})",
                allowed.join(", "),
                field.rule
            )),
        },
        Check::MaxChars(max) => {
            let count = s.chars().count();
            if count > max {
                Err(format!(
                    "is {count} characters long; at most {max} allowed ({})",
                    field.rule
                ))
            } else {
                Ok(None)
            }
        }
        Check::DnsName => check_dns_name(s).map(|()| None),
        Check::Email => check_email(s).map(|()| None),
        Check::Identifier => {
            if s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                Ok(None)
            } else {
                Err(format!(
                    "{s:?} is not a glossary value (lowercase letters, digits and _, such as server_auth_only_eku)"
                ))
            }
        }
        Check::ExpirationDate => Ok(None),
        Check::Any | Check::Range(..) | Check::Csr => Ok(None),
    }
}

fn check_dns_name(name: &str) -> Result<(), String> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    let bad = |why: &str| Err(format!("{name:?} is not a DNS name: {why}"));
    if name.len() > 253 {
        return bad("longer than 253 characters");
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return bad("empty label");
        }
        if label.len() > 63 {
            return bad("a label is longer than 63 characters");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return bad("only letters, digits, - and . are allowed (and a leading *.)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label starts or ends with -");
        }
    }
    Ok(())
}

fn check_email(address: &str) -> Result<(), String> {
    let bad = || Err(format!("{address:?} is not an email address"));
    let Some((local, domain)) = address.rsplit_once('@') else {
        return bad();
    };
    if local.is_empty()
        || local.len() > 64
        || local.contains(|c: char| c.is_whitespace() || c == '@')
        || !domain.contains('.')
        || domain.starts_with("*.")
        || check_dns_name(domain).is_err()
    {
        return bad();
    }
    Ok(())
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// The page's limit on `custom_expiration_date`: "within 397 days of the date you request".
const MAX_VALIDITY_DAYS: i64 = 397;

fn check_date(field: &Field, typed: Typed, today: Date) -> Result<Typed, String> {
    if field.check != Check::ExpirationDate {
        return Ok(typed);
    }
    let text = typed.as_str().unwrap_or_default();
    let date = parse_expiration_date(text).ok_or_else(|| {
        format!(
            "{text:?} is not a date written dd MMM YYYY, such as \"09 JUN 2021\" ({})",
            field.rule
        )
    })?;
    let latest = today.saturating_add(Duration::days(MAX_VALIDITY_DAYS));
    if date < today {
        return Err(format!("{text:?} is in the past ({})", field.rule));
    }
    if date > latest {
        return Err(format!(
            "{text:?} is more than {MAX_VALIDITY_DAYS} days after today ({today}); the latest allowed is {} ({})",
            format_expiration_date(latest),
            field.rule
        ));
    }
    Ok(Typed::Str(format_expiration_date(date)))
}

fn parse_expiration_date(text: &str) -> Option<Date> {
    let mut parts = text.split(' ');
    let (day, month, year) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || day.len() != 2
        || year.len() != 4
        || !day.bytes().chain(year.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let month_index = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))?;
    let month = Month::try_from(u8::try_from(month_index + 1).ok()?).ok()?;
    Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()
}

fn format_expiration_date(date: Date) -> String {
    format!(
        "{:02} {} {:04}",
        date.day(),
        MONTHS[usize::from(u8::from(date.month())) - 1],
        date.year()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::fields::{FIELDS, lookup};
    use time::macros::date;

    const TODAY: Date = date!(2026 - 03 - 01);

    fn field(name: &str) -> &'static Field {
        &FIELDS[lookup(name).expect("known field")]
    }

    fn text(name: &str, value: &str) -> Result<Typed, String> {
        convert(field(name), Raw::Text(value.to_owned()), TODAY)
    }

    fn string(s: &str) -> Typed {
        Typed::Str(s.to_owned())
    }

    #[test]
    fn csv_text_becomes_each_kind() {
        assert_eq!(
            text("common_name", "example.com"),
            Ok(string("example.com"))
        );
        assert_eq!(text("server_platform.id", "45"), Ok(Typed::Int(45)));
        assert_eq!(text("skip_approval", "true"), Ok(Typed::Bool(true)));
        assert_eq!(text("is_rsassa_pss", "FALSE"), Ok(Typed::Bool(false)));
        assert_eq!(
            text("dns_names", " a.example ; b.example"),
            Ok(Typed::List(vec!["a.example".into(), "b.example".into()]))
        );
        assert_eq!(
            Typed::List(vec!["x".into()]).to_json(),
            serde_json::json!(["x"])
        );
        assert_eq!(Typed::Int(-1).to_json(), serde_json::json!(-1));
    }

    #[test]
    fn wrong_types_name_what_was_expected() {
        assert_eq!(
            text("server_platform.id", "two"),
            Err("expected an integer, found \"two\"".into())
        );
        assert_eq!(
            text("skip_approval", "yes"),
            Err("expected true or false, found \"yes\"".into())
        );
        let err = convert(field("cert_validity.days"), Raw::Str("30".into()), TODAY);
        assert_eq!(
            err,
            Err("expected an integer, found the string \"30\"".into())
        );
        let err = convert(field("dns_names"), Raw::Str("a.example".into()), TODAY);
        assert_eq!(
            err,
            Err("expected a list of strings, found the string \"a.example\"".into())
        );
        let err = convert(field("common_name"), Raw::Int(3), TODAY);
        assert_eq!(err, Err("expected a string, found the integer 3".into()));
        let err = convert(field("dns_names"), Raw::List(vec![Raw::Int(1)]), TODAY);
        assert!(err.is_err());
        let err = convert(field("comments"), Raw::Other("a table"), TODAY);
        assert_eq!(err, Err("expected a string, found a table".into()));
    }

    #[test]
    fn empty_list_items_and_empty_strings_are_rejected() {
        assert!(text("dns_names", "a.example;;b.example").is_err());
        assert!(text("dns_names", "a.example;").is_err());
        assert!(convert(field("comments"), Raw::Str(String::new()), TODAY).is_err());
        assert!(convert(field("emails"), Raw::List(vec![]), TODAY).is_err());
    }

    #[test]
    fn cells_of_a_semicolon_separated_csv_split_lists_on_commas_and_read_the_rest_as_text() {
        let cell = |name: &str, value: &str| {
            convert(field(name), Raw::TextCommaList(value.to_owned()), TODAY)
        };
        let list = |items: &[&str]| Typed::List(items.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(
            cell("dns_names", "a.example, www.a.example"),
            Ok(list(&["a.example", "www.a.example"]))
        );
        assert_eq!(
            cell("dns_names", "a.example;www.a.example"),
            Ok(list(&["a.example", "www.a.example"])),
            "a ; inside a quoted cell separates too"
        );
        let err = cell("dns_names", "a.example,").expect_err("trailing comma");
        assert!(err.contains("empty item in the ,-separated list"), "{err}");
        assert_eq!(cell("comments", "one, two"), Ok(string("one, two")));
        assert_eq!(cell("server_platform.id", "45"), Ok(Typed::Int(45)));
        assert_eq!(cell("skip_approval", "TRUE"), Ok(Typed::Bool(true)));
    }

    #[test]
    fn signature_hash_accepts_any_case_and_sends_lowercase() {
        assert_eq!(text("signature_hash", "SHA384"), Ok(string("sha384")));
        assert_eq!(text("signature_hash", "sha512"), Ok(string("sha512")));
        let err = text("signature_hash", "sha1").expect_err("sha1 is not allowed");
        assert!(err.contains("sha256, sha384, sha512"), "{err}");
    }

    #[test]
    fn enumerations_accept_documented_values_only() {
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "dcv_method",
                &["email", "dns-txt-token", "dns-cname-token", "http-token"],
                "dns",
            ),
            ("certificate_dcv_scope", &["base_domain", "fqdn"], "domain"),
            (
                "cs_provisioning_method",
                &["ship_token", "client_app", "email"],
                "usb",
            ),
            ("ship_info.method", &["STANDARD", "EXPEDITED"], "OVERNIGHT"),
            (
                "common_name_indicator",
                &[
                    "email_address",
                    "given_name_surname",
                    "pseudonym",
                    "organization_name",
                ],
                "common_name",
            ),
        ];
        for (name, good, bad) in cases {
            for value in *good {
                assert_eq!(text(name, value), Ok(string(value)), "{name}={value}");
            }
            assert!(text(name, bad).is_err(), "{name}={bad}");
        }
        assert_eq!(
            text("ship_info.method", "expedited"),
            Ok(string("EXPEDITED"))
        );
    }

    #[test]
    fn cert_validity_years_is_only_1() {
        assert_eq!(text("cert_validity.years", "1"), Ok(Typed::Int(1)));
        let err = text("cert_validity.years", "2").expect_err("2 years");
        assert!(err.contains("Allowed value: 1"), "{err}");
        assert!(text("cert_validity.years", "0").is_err());
    }

    #[test]
    fn cert_validity_days_is_1_to_397() {
        assert_eq!(text("cert_validity.days", "397"), Ok(Typed::Int(397)));
        assert_eq!(text("cert_validity.days", "1"), Ok(Typed::Int(1)));
        let err = text("cert_validity.days", "398").expect_err("398 days");
        assert!(err.contains("Max: 397"), "{err}");
        assert!(text("cert_validity.days", "0").is_err());
    }

    #[test]
    fn server_platform_id_allows_minus_one_and_positive_ids() {
        assert_eq!(text("server_platform.id", "-1"), Ok(Typed::Int(-1)));
        assert_eq!(text("server_platform.id", "2"), Ok(Typed::Int(2)));
        assert!(text("server_platform.id", "-2").is_err());
    }

    #[test]
    fn order_id_must_be_positive() {
        assert_eq!(text("order_id", "1"), Ok(Typed::Int(1)));
        assert!(text("order_id", "0").is_err());
        assert!(text("order_id", "-5").is_err());
        assert!(text("order_id", "1.5").is_err());
    }

    #[test]
    fn custom_expiration_date_is_dd_mmm_yyyy_within_397_days() {
        let f = "cert_validity.custom_expiration_date";
        assert_eq!(text(f, "01 MAR 2026"), Ok(string("01 MAR 2026")), "today");
        // 2026-03-01 + 397 days = 2027-04-02.
        assert_eq!(text(f, "02 apr 2027"), Ok(string("02 APR 2027")));
        let err = text(f, "03 APR 2027").expect_err("398 days");
        assert!(err.contains("397 days"), "{err}");
        assert!(text(f, "28 FEB 2026").expect_err("past").contains("past"));
        for bad in [
            "2026-06-09",
            "9 JUN 2026",
            "09 JUNE 2026",
            "31 APR 2026",
            "09  JUN 2026",
        ] {
            let err = text(f, bad).expect_err(bad);
            assert!(err.contains("dd MMM YYYY"), "{bad}: {err}");
        }
    }

    #[test]
    fn user_principle_name_holds_one_name_of_at_most_255_characters() {
        let f = "user_principle_name";
        let long = "u".repeat(255);
        assert_eq!(text(f, &long), Ok(Typed::List(vec![long.clone()])));
        let err = text(f, &format!("{long}u")).expect_err("256 characters");
        assert!(err.contains("255"), "{err}");
        let err = text(f, "a@example.com;b@example.com").expect_err("two names");
        assert!(err.contains("Max length: 1"), "{err}");
    }

    #[test]
    fn subject_lengths_follow_the_character_limits() {
        for (name, max) in [
            ("subject.serial_number", 100),
            ("subject.pseudonym", 128),
            ("subject.job_title", 128),
        ] {
            let at_limit = "é".repeat(max);
            assert_eq!(text(name, &at_limit), Ok(string(&at_limit)), "{name}");
            let err = text(name, &format!("{at_limit}x")).expect_err(name);
            assert!(err.contains(&format!("Character limit: {max}")), "{err}");
        }
    }

    #[test]
    fn dns_names_allow_wildcards_and_reject_junk() {
        for good in [
            "example.com",
            "*.example.com",
            "xn--bcher-kva.example",
            "intranet",
            "a-b.c",
        ] {
            assert!(text("dns_names", good).is_ok(), "{good}");
        }
        for bad in [
            "exa mple.com",
            "a..b",
            "-a.com",
            "a-.com",
            "*.*.a.com",
            "a.com.",
            "ex_ample.com",
        ] {
            assert!(text("dns_names", bad).is_err(), "{bad}");
        }
        assert!(text("dns_names", &format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn emails_must_look_like_addresses() {
        assert!(text("emails", "jane.doe+tag@example.com; x@sub.example.org").is_ok());
        for bad in [
            "jane",
            "@example.com",
            "jane@",
            "jane@localhost",
            "ja ne@example.com",
        ] {
            assert!(text("emails", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn control_characters_are_rejected_in_every_string_but_the_csr() {
        assert!(text("comments", "line\u{7}bell").is_err());
        assert!(convert(field("comments"), Raw::Str("a\nb".into()), TODAY).is_err());
        assert!(convert(field("csr"), Raw::Str("a\nb".into()), TODAY).is_ok());
    }

    #[test]
    fn profile_option_and_usages_are_glossary_words() {
        assert!(text("profile_option", "server_auth_only_eku").is_ok());
        assert!(text("profile_option", "Server Auth").is_err());
        assert!(
            text(
                "usage_designation.additional_usages",
                "signing;key_management"
            )
            .is_ok()
        );
    }
}
