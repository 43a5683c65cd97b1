//! `reissuer`: reissues DigiCert CertCentral certificates in bulk, exactly once, inside the
//! account's rate limits, with a SQLite journal that survives crashes.
//!
//! Calls go downward only: `cli` → `runner` → (`api`, `journal`, `limiter`) → pure core
//! (`manifest`, `payload`, `config`, `secret`). The `simulator` is CertCentral on loopback and
//! shares none of the client's request or response types.

pub mod api;
pub mod campaign;
pub mod cli;
pub mod config;
pub mod events;
pub mod exit;
pub mod identity;
pub mod journal;
pub mod limiter;
pub mod manifest;
pub mod payload;
pub mod progress;
pub mod reads;
pub mod report;
pub mod runner;
pub mod secret;
pub mod simulator;
pub mod tenure;
