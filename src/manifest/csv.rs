//! CSV manifests: a header row of field names, then one order per row, read one record at a
//! time. An empty cell means "not set"; lists are `;`-separated (split in `value.rs`).

use std::fs::File;
use std::path::Path;

use super::error::{FieldError, ManifestError};
use super::fields::{self, FIELDS, FieldId, Target, unknown_field};
use super::raw::RawOrder;
use super::value::Raw;

/// The rows of a CSV manifest whose header was valid.
pub(crate) struct CsvRows {
    reader: ::csv::Reader<File>,
    columns: Vec<FieldId>,
    file: String,
    record: ::csv::ByteRecord,
}

impl CsvRows {
    /// Opens the file and checks the header: every column a known field, none twice, and an
    /// `order_id` column.
    pub(crate) fn open(path: &Path, file: &str) -> Result<Self, ManifestError> {
        let handle = File::open(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            // Rows of the wrong length are reported on their own line, not as a file error.
            .flexible(true)
            .from_reader(handle);
        let mut header = ::csv::ByteRecord::new();
        let has_header = reader
            .read_byte_record(&mut header)
            .map_err(|e| read_error(path, e))?;
        let error = |line: u64, field: &str, message: String| FieldError {
            file: file.to_owned(),
            line,
            field: field.to_owned(),
            message,
        };
        if !has_header {
            return Err(ManifestError::Fields(vec![error(
                1,
                "header",
                "the file is empty; expected a header row of field names such as order_id,common_name,signature_hash".to_owned(),
            )]));
        }
        let line = header.position().map_or(1, |p| p.line());
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
                    unknown_field(name)
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
            file: file.to_owned(),
            record: ::csv::ByteRecord::new(),
        })
    }

    fn raw_order(&self) -> RawOrder {
        let line = self.record.position().map_or(0, |p| p.line());
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
                        order.values.push((*id, Raw::Text(text.to_owned()), line));
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
