//! Domain control for token-DCV reissues: the token export (`report --dcv`) and the checks
//! (`dcv check`).

pub mod check;
mod export;

pub use export::{COLUMNS, DcvError, DcvRow, write_csv, write_json};
