//! TOML manifests: an optional `[defaults]` table and an array `[[orders]]`. Keys are field paths,
//! written as dotted keys or nested tables, with or without the `certificate` prefix. Lines come
//! from the parser's byte spans, so an error points at the key (or the order's `[[orders]]`).

use std::io::Read as _;
use std::path::Path;

use ::toml::Spanned;
use ::toml::de::{DeTable, DeValue};

use super::error::{FieldError, ManifestError};
use super::fields::{self, FIELDS, Target, unknown_field};
use super::raw::{Defaults, RawOrder};
use super::text;
use super::value::{self, Raw};

/// A parsed TOML manifest: checked defaults and the orders still to be checked.
pub(crate) struct TomlManifest {
    pub(crate) defaults: Defaults,
    pub(crate) orders: Vec<RawOrder>,
}

/// Byte offset to 1-based line number.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self(starts)
    }

    fn line(&self, offset: usize) -> u64 {
        self.0.partition_point(|start| *start <= offset) as u64
    }
}

struct Reader<'a> {
    file: &'a str,
    lines: Lines,
}

impl Reader<'_> {
    fn error(&self, offset: usize, field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            file: self.file.to_owned(),
            line: self.lines.line(offset),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// Walks a table of fields, collecting each known field's value and an error for anything
    /// else.
    fn flatten(
        &self,
        table: &DeTable<'_>,
        prefix: &str,
        out: &mut Vec<(usize, Raw, u64)>,
        errors: &mut Vec<FieldError>,
    ) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            let offset = key.span().start;
            if let Some(id) = fields::lookup(&path) {
                out.push((id, to_raw(value.get_ref()), self.lines.line(offset)));
            } else if let (DeValue::Table(inner), true) =
                (value.get_ref(), fields::is_object(&path))
            {
                self.flatten(inner, &path, out, errors);
            } else {
                errors.push(self.error(offset, &path, unknown_field(&path)));
            }
        }
    }
}

fn to_raw(value: &DeValue<'_>) -> Raw {
    match value {
        DeValue::String(s) => Raw::Str(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map_or(Raw::Other("an integer out of range"), Raw::Int),
        DeValue::Float(_) => Raw::Other("a float"),
        DeValue::Boolean(b) => Raw::Bool(*b),
        DeValue::Datetime(_) => Raw::Other("a TOML date (write dates as strings)"),
        DeValue::Array(items) => Raw::List(items.iter().map(|v| to_raw(v.get_ref())).collect()),
        DeValue::Table(_) => Raw::Other("a table"),
    }
}

/// Reads and parses the manifest at `path` (named `file` in errors), through `text.rs`
/// (byte-order marks, UTF-16).
pub(crate) fn read(
    path: &Path,
    file: &str,
    today: time::Date,
) -> Result<TomlManifest, ManifestError> {
    let mut bytes = Vec::new();
    text::open(path)?
        .read_to_end(&mut bytes)
        .map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if text::looks_like_utf16(&bytes) {
        return Err(ManifestError::Syntax {
            file: file.to_owned(),
            line: 1,
            message: text::UTF16_WITHOUT_BOM.to_owned(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        ManifestError::Syntax {
            file: file.to_owned(),
            line: valid.iter().filter(|b| **b == b'\n').count() as u64 + 1,
            message: "not valid UTF-8; save the file as UTF-8, or as UTF-16 with a byte-order mark"
                .to_owned(),
        }
    })?;
    parse(&text, file, today)
}

/// Parses the whole document; syntax and layout problems are whole-file errors.
pub(crate) fn parse(
    text: &str,
    file: &str,
    today: time::Date,
) -> Result<TomlManifest, ManifestError> {
    let reader = Reader {
        file,
        lines: Lines::new(text),
    };
    let root = DeTable::parse(text).map_err(|e| ManifestError::Syntax {
        file: file.to_owned(),
        line: e.span().map_or(1, |span| reader.lines.line(span.start)),
        message: e.message().trim().to_owned(),
    })?;
    let mut errors = Vec::new();
    let mut defaults: Defaults = vec![None; FIELDS.len()];
    let mut orders = Vec::new();
    for (key, value) in root.get_ref() {
        let offset = key.span().start;
        match (key.get_ref().as_ref(), value.get_ref()) {
            ("defaults", DeValue::Table(table)) => {
                read_defaults(&reader, table, today, &mut defaults, &mut errors);
            }
            ("orders", DeValue::Array(array)) => {
                for item in array.iter() {
                    match item.get_ref() {
                        DeValue::Table(table) => orders.push(read_order(&reader, item, table)),
                        _ => errors.push(reader.error(
                            item.span().start,
                            "orders",
                            "each order must be a table: write [[orders]] above its fields",
                        )),
                    }
                }
            }
            ("defaults" | "orders", _) => errors.push(reader.error(
                offset,
                key.get_ref(),
                "must be [defaults] (a table) or [[orders]] (an array of tables)",
            )),
            (name, _) => errors.push(reader.error(
                offset,
                name,
                "unknown top-level key: a TOML manifest has [defaults] and [[orders]]; \
                 fields go below one of them",
            )),
        }
    }
    if errors.is_empty() {
        Ok(TomlManifest { defaults, orders })
    } else {
        errors.sort_by_key(|e| e.line);
        Err(ManifestError::Fields(errors))
    }
}

fn read_defaults(
    reader: &Reader<'_>,
    table: &DeTable<'_>,
    today: time::Date,
    defaults: &mut Defaults,
    errors: &mut Vec<FieldError>,
) {
    let mut values = Vec::new();
    reader.flatten(table, "", &mut values, errors);
    for (id, raw, line) in values {
        let field = &FIELDS[id];
        let error = |message: String| FieldError {
            file: reader.file.to_owned(),
            line,
            field: field.name().to_owned(),
            message,
        };
        if field.target == Target::OrderId {
            errors.push(error("order_id cannot have a default".to_owned()));
            continue;
        }
        if let Some((_, first)) = &defaults[id] {
            errors.push(error(format!(
                "set twice in [defaults] (also on line {first})"
            )));
            continue;
        }
        match value::convert(field, raw, today) {
            Ok(typed) => defaults[id] = Some((typed, line)),
            Err(message) => errors.push(error(message)),
        }
    }
}

fn read_order(reader: &Reader<'_>, item: &Spanned<DeValue<'_>>, table: &DeTable<'_>) -> RawOrder {
    let mut order = RawOrder {
        line: header_line(reader, item),
        ..RawOrder::default()
    };
    reader.flatten(table, "", &mut order.values, &mut order.errors);
    order
}

/// The line of an order's `[[orders]]` header (or its inline table).
fn header_line(reader: &Reader<'_>, item: &Spanned<DeValue<'_>>) -> u64 {
    reader.lines.line(item.span().start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::value::Typed;
    use time::macros::date;

    const TODAY: time::Date = date!(2026 - 03 - 01);

    fn parse_ok(text: &str) -> TomlManifest {
        match parse(text, "m.toml", TODAY) {
            Ok(manifest) => manifest,
            Err(e) => panic!("{e}"),
        }
    }

    fn lines_of(order: &RawOrder) -> Vec<(&'static str, u64)> {
        let mut lines: Vec<_> = order
            .values
            .iter()
            .map(|(id, _, line)| (FIELDS[*id].path, *line))
            .collect();
        lines.sort_unstable();
        lines
    }

    #[test]
    fn order_lines_are_the_array_headers_and_value_lines_the_keys() {
        let manifest = parse_ok(
            "# comment\n\
             [[orders]]\n\
             order_id = 1\n\
             \n\
             [[orders]]\n\
             order_id = 2\n\
             certificate.signature_hash = \"sha256\"\n",
        );
        assert_eq!(manifest.orders.len(), 2);
        assert_eq!(manifest.orders[0].line, 2);
        assert_eq!(manifest.orders[1].line, 5);
        assert_eq!(
            lines_of(&manifest.orders[1]),
            [("certificate.signature_hash", 7), ("order_id", 6)]
        );
    }

    #[test]
    fn nested_tables_and_inline_tables_are_walked() {
        let manifest = parse_ok(
            "[[orders]]\n\
             order_id = 1\n\
             server_platform = { id = 2 }\n\
             [orders.certificate]\n\
             common_name = \"a.example\"\n\
             [orders.certificate.cert_validity]\n\
             days = 30\n\
             [orders.ship_info]\n\
             city = \"Lehi\"\n",
        );
        let order = &manifest.orders[0];
        assert!(order.errors.is_empty(), "{:?}", order.errors);
        assert_eq!(
            lines_of(order),
            [
                ("certificate.cert_validity.days", 7),
                ("certificate.common_name", 5),
                ("certificate.server_platform.id", 3),
                ("order_id", 2),
                ("ship_info.city", 9),
            ]
        );
        assert_eq!(order.line, 1);
    }

    #[test]
    fn unknown_keys_are_errors_on_their_line() {
        let manifest = parse_ok(
            "[[orders]]\n\
             order_id = 1\n\
             dns_name = [\"a\"]\n\
             certificate.colour = \"red\"\n",
        );
        let errors = &manifest.orders[0].errors;
        assert_eq!(errors.len(), 2);
        assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>().len(), 2);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(
                &"m.toml:3: dns_name: unknown field (did you mean dns_names?)".to_owned()
            ),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("m.toml:4: certificate.colour: unknown field")),
            "{text:?}"
        );
    }

    #[test]
    fn native_values_become_raw_values() {
        let manifest = parse_ok(
            "[[orders]]\n\
             order_id = 0x10\n\
             skip_approval = true\n\
             emails = [\"a@example.com\"]\n\
             comments = 1.5\n",
        );
        let raws: Vec<&Raw> = manifest.orders[0]
            .values
            .iter()
            .map(|(_, r, _)| r)
            .collect();
        assert!(raws.contains(&&Raw::Int(16)));
        assert!(raws.contains(&&Raw::Bool(true)));
        assert!(raws.contains(&&Raw::List(vec![Raw::Str("a@example.com".into())])));
        assert!(raws.contains(&&Raw::Other("a float")));
    }

    #[test]
    fn defaults_are_checked_once_with_their_lines() {
        let manifest = parse_ok("[defaults]\nsignature_hash = \"SHA256\"\n");
        let id = fields::lookup("signature_hash").expect("known");
        assert_eq!(
            manifest.defaults[id],
            Some((Typed::Str("sha256".into()), 2))
        );

        let Err(ManifestError::Fields(errors)) = parse(
            "[defaults]\norder_id = 5\ncert_validity.days = 900\n",
            "m.toml",
            TODAY,
        ) else {
            panic!("expected field errors");
        };
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert_eq!(
            text[0],
            "m.toml:2: order_id: order_id cannot have a default"
        );
        assert!(
            text[1].starts_with("m.toml:3: certificate.cert_validity.days: 900 is out of range"),
            "{text:?}"
        );
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let Err(ManifestError::Syntax { line, .. }) = parse(
            "[[orders]]\norder_id = 1\ncommon_name = \"unterminated\n",
            "m.toml",
            TODAY,
        ) else {
            panic!("expected a syntax error");
        };
        assert_eq!(line, 3);
    }

    #[test]
    fn layout_errors_are_whole_file_errors() {
        let Err(ManifestError::Fields(errors)) =
            parse("order_id = 1\n[orders]\nx = 1\n", "m.toml", TODAY)
        else {
            panic!("expected layout errors");
        };
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].line, 1);
        assert_eq!(errors[1].line, 2);
    }
}
