//! CSV manifests: a header row of field names, then one order per row, read one record at a
//! time. An empty cell means "not set".
//!
//! The header decides how cells are separated. Field names hold neither `,` nor `;`, so a header
//! with a `;` and no `,` is a file saved by a spreadsheet in a locale whose list separator is
//! `;` (much of Europe): its cells are split on `;` and, that character being taken, its lists
//! on `,` (or on `;` inside a quoted cell). Otherwise cells are split on `,` and lists on `;`.
//! The bytes are read through `text.rs` (byte-order marks, UTF-16).

use std::io::{self, BufRead as _, BufReader, Cursor, Read as _};
use std::path::Path;

use super::error::{FieldError, ManifestError};
use super::fields::{self, FIELDS, FieldId, Target, unknown_field};
use super::raw::RawOrder;
use super::text::{self, Decoded, UnixLines};
use super::value::Raw;

/// The lines up to the header, already read, then the rest of the file.
type Source = io::Chain<Cursor<Vec<u8>>, BufReader<UnixLines<Decoded>>>;

/// What separates a CSV manifest's cells, as its header row shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Separator {
    Comma,
    Semicolon,
}

impl Separator {
    /// Field names hold neither `,` nor `;`: a header with a `;` and no `,` is `;`-separated.
    fn of_header(line: &[u8]) -> Self {
        if line.contains(&b';') && !line.contains(&b',') {
            Separator::Semicolon
        } else {
            Separator::Comma
        }
    }

    fn byte(self) -> u8 {
        match self {
            Separator::Comma => b',',
            Separator::Semicolon => b';',
        }
    }

    /// A cell's text as a raw value: lists are split on whatever does not separate cells.
    fn cell(self, text: String) -> Raw {
        match self {
            Separator::Comma => Raw::Text(text),
            Separator::Semicolon => Raw::TextCommaList(text),
        }
    }
}

/// The rows of a CSV manifest whose header was valid.
pub(crate) struct CsvRows {
    reader: ::csv::Reader<Source>,
    columns: Vec<FieldId>,
    separator: Separator,
    file: String,
    record: ::csv::ByteRecord,
}

impl CsvRows {
    /// Opens the file and checks the header: every column a known field, none twice, and an
    /// `order_id` column.
    pub(crate) fn open(path: &Path, file: &str) -> Result<Self, ManifestError> {
        let mut rest = BufReader::new(UnixLines::new(text::open(path)?));
        // The header line is read ahead to choose the separator, then handed to the CSV reader
        // in front of the rest (with any blank lines before it), so lines stay the file's own.
        let mut ahead = Vec::new();
        let header_start = loop {
            let start = ahead.len();
            let read =
                rest.read_until(b'\n', &mut ahead)
                    .map_err(|source| ManifestError::Read {
                        path: path.to_path_buf(),
                        source,
                    })?;
            if read == 0 || !ahead[start..].trim_ascii().is_empty() {
                break start;
            }
        };
        let header_line = &ahead[header_start..];
        let error = |line: u64, field: &str, message: String| FieldError {
            file: file.to_owned(),
            line,
            field: field.to_owned(),
            message,
        };
        if text::looks_like_utf16(header_line) {
            return Err(ManifestError::Fields(vec![error(
                1,
                "header",
                text::UTF16_WITHOUT_BOM.to_owned(),
            )]));
        }
        let separator = Separator::of_header(header_line);
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(separator.byte())
            // Rows of the wrong length are reported on their own line, not as a file error.
            .flexible(true)
            .from_reader(Cursor::new(ahead).chain(rest));
        let mut header = ::csv::ByteRecord::new();
        let has_header = reader
            .read_byte_record(&mut header)
            .map_err(|e| read_error(path, e))?;
        if !has_header {
            return Err(ManifestError::Fields(vec![error(
                1,
                "header",
                "the file is empty; expected a header row of field names such as order_id,common_name,signature_hash".to_owned(),
            )]));
        }
        let line = record_line(&reader, &header);
        let mut errors = Vec::new();
        let mut columns = Vec::with_capacity(header.len());
        for (index, cell) in header.iter().enumerate() {
            let name = String::from_utf8_lossy(cell);
            // Spreadsheets often save a byte-order mark before the first name.
            let name = name.trim_start_matches('\u{feff}').trim();
            let Some(id) = fields::lookup(name) else {
                let label = if name.is_empty() {
                    format!("column {}", index + 1)
                } else {
                    name.to_owned()
                };
                let message = if name.is_empty() {
                    "empty column name".to_owned()
                } else {
                    unknown_header_name(name)
                };
                errors.push(error(line, &label, message));
                continue;
            };
            if let Some(before) = columns.iter().position(|c| *c == id) {
                errors.push(error(
                    line,
                    name,
                    format!(
                        "duplicate column: column {} is also {}",
                        before + 1,
                        FIELDS[id].name()
                    ),
                ));
            }
            columns.push(id);
        }
        if !columns
            .iter()
            .any(|id| FIELDS[*id].target == Target::OrderId)
        {
            errors.push(error(
                line,
                "order_id",
                "required column is missing".to_owned(),
            ));
        }
        if !errors.is_empty() {
            return Err(ManifestError::Fields(errors));
        }
        Ok(Self {
            reader,
            columns,
            separator,
            file: file.to_owned(),
            record: ::csv::ByteRecord::new(),
        })
    }

    /// Whether the header has a column for `id`: a field no column names is set in no row.
    pub(crate) fn has_column(&self, id: FieldId) -> bool {
        self.columns.contains(&id)
    }

    fn raw_order(&self) -> RawOrder {
        let line = record_line(&self.reader, &self.record);
        let mut order = RawOrder {
            line,
            values: Vec::with_capacity(self.columns.len()),
            errors: Vec::new(),
            unreadable: false,
        };
        if self.record.len() != self.columns.len() {
            order.errors.push(FieldError {
                file: self.file.clone(),
                line,
                field: "row".to_owned(),
                message: format!(
                    "has {} cells but the header has {} columns",
                    self.record.len(),
                    self.columns.len()
                ),
            });
            order.unreadable = true;
            return order;
        }
        for (cell, id) in self.record.iter().zip(&self.columns) {
            match std::str::from_utf8(cell) {
                Ok(text) => {
                    let text = text.trim();
                    if !text.is_empty() {
                        let raw = self.separator.cell(text.to_owned());
                        order.values.push((*id, raw, line));
                    }
                }
                Err(_) => order.errors.push(FieldError {
                    file: self.file.clone(),
                    line,
                    field: FIELDS[*id].name().to_owned(),
                    message: "not valid UTF-8".to_owned(),
                }),
            }
        }
        order
    }
}

/// Why a header cell is not a field name, with what to do when the cell is several names run
/// together by a separator this reader did not split on.
fn unknown_header_name(name: &str) -> String {
    if name.contains(';') {
        "unknown field (the header has both , and ; between names: separate every column with \
         the same one, , or ;)"
            .to_owned()
    } else if name.contains('\t') {
        "unknown field (the header is tab-separated: save the file as CSV, with , or ; between \
         columns)"
            .to_owned()
    } else {
        unknown_field(name)
    }
}

/// The line a record just read starts on: the line the reader is on now, less the line endings
/// inside the record's quoted cells and the one that ended it. (The csv crate's own record
/// position is a line early after a blank line.) Exact because every line ends in one `\n`
/// ([`UnixLines`]).
fn record_line(reader: &::csv::Reader<Source>, record: &::csv::ByteRecord) -> u64 {
    let inside = record.as_slice().iter().filter(|b| **b == b'\n').count();
    let inside = u64::try_from(inside).unwrap_or(u64::MAX);
    reader
        .position()
        .line()
        .saturating_sub(inside.saturating_add(1))
        .max(1)
}

fn read_error(path: &Path, error: ::csv::Error) -> ManifestError {
    let source = match error.into_kind() {
        ::csv::ErrorKind::Io(io) => io,
        other => std::io::Error::other(format!("{other:?}")),
    };
    ManifestError::Read {
        path: path.to_path_buf(),
        source,
    }
}

impl Iterator for CsvRows {
    type Item = Result<RawOrder, ManifestError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(true) => Some(Ok(self.raw_order())),
            Ok(false) => None,
            Err(e) => {
                let path = Path::new(&self.file).to_path_buf();
                Some(Err(read_error(&path, e)))
            }
        }
    }
}
