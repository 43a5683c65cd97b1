//! The contract between the readers (`csv.rs`, `toml.rs`, `--set` in `defaults.rs`) and the
//! rules (`rules.rs`): an order as written, and default values already checked.

use super::error::FieldError;
use super::fields::FieldId;
use super::value::{Raw, Typed};

/// One order as read from the file, before any checking.
#[derive(Debug, Default)]
pub(crate) struct RawOrder {
    /// The row's line (CSV) or the `[[orders]]` line (TOML).
    pub(crate) line: u64,
    /// Each value with the line it was written on.
    pub(crate) values: Vec<(FieldId, Raw, u64)>,
    /// Problems found while reading (an unknown TOML key, a cell that is not UTF-8).
    pub(crate) errors: Vec<FieldError>,
    /// The row could not be split into fields at all (a CSV row of the wrong length): its
    /// errors say why, and no field rule is checked.
    pub(crate) unreadable: bool,
}

/// A checked value and the line it was written on (0 for `--set`, which has no line).
pub(crate) type Slot = Option<(Typed, u64)>;

/// A default value for each field of the field table, by [`FieldId`].
pub(crate) type Defaults = Vec<Slot>;
