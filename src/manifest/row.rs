//! What a scan hands its caller: one [`Row`] per order, valid (the exact request body) or
//! invalid (everything wrong with it), and a [`ScanSummary`] at the end.

use super::error::FieldError;

/// One valid order: where it came from and the exact request body.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub order_id: u64,
    /// The manifest line of the row (CSV) or of the order's `[[orders]]` header (TOML).
    pub line: u64,
    /// The full reissue request body.
    pub body: serde_json::Value,
}

/// A row that cannot be sent, with everything wrong with it (sorted by line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRow {
    /// The order id, when it could be read.
    pub order_id: Option<u64>,
    pub line: u64,
    pub errors: Vec<FieldError>,
}

/// A manifest row after validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Valid(Order),
    Invalid(InvalidRow),
}

/// How many rows a scan passed to its sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanSummary {
    pub valid: u64,
    pub invalid: u64,
}
