//! Key-rotation campaigns beyond sending: choosing the orders from the account, fresh keys and
//! CSRs, filling payloads from the live order, the DCV token export, and collecting the issued
//! certificates.

pub mod collect;
pub mod dcv;
pub mod fill;
pub mod keygen;
pub mod select;
