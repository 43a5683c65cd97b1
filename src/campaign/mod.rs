//! Key-rotation campaigns beyond sending: fresh keys and CSRs, filling payloads from the live
//! order, domain control (the token export and the checks), collecting the issued certificates
//! and running the deploy hook for each.

pub mod approve;
pub mod collect;
pub mod dcv;
pub mod deploy;
pub mod fill;
pub mod keygen;
