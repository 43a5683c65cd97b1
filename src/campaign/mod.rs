//! Key-rotation campaigns beyond sending: filling payloads from the live order, and collecting
//! the issued certificates.

pub mod collect;
pub mod fill;
