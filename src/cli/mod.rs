//! The command line: clap types, and the edge where errors become exit codes.

pub mod simulate;

use std::process::ExitCode;

use clap::Parser;

/// Reissues DigiCert CertCentral certificates in bulk.
#[derive(Debug, Parser)]
#[command(name = "reissuer", version)]
pub struct Cli {}

pub fn main(_cli: Cli) -> ExitCode {
    ExitCode::SUCCESS
}
