use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    reissuer::cli::main(reissuer::cli::Cli::parse())
}
