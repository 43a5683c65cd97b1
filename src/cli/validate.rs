//! `validate` and `run --dry-run`: build every payload, send nothing, write nothing.

use crate::exit::Exit;

use super::{RunArgs, ValidateArgs};

pub(crate) fn validate(_args: &ValidateArgs) -> anyhow::Result<Exit> {
    anyhow::bail!("validate is not yet available in this build")
}

pub(crate) fn dry_run(_args: &RunArgs) -> anyhow::Result<Exit> {
    anyhow::bail!("run --dry-run is not yet available in this build")
}
