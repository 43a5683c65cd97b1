//! The process exit codes of the contract, in one place.

use std::process::ExitCode;

/// How a command ended, as the exit code a script sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every order of the run succeeded or was skipped.
    Ok = 0,
    /// The run finished; some orders failed, are uncertain or invalid.
    SomeFailed = 1,
    /// Usage error or invalid manifest; nothing was sent.
    Usage = 2,
    /// Interrupted by SIGINT/SIGTERM; state saved, resumable.
    Interrupted = 3,
    /// CertCentral refused the credentials; nothing more was sent.
    Credentials = 4,
    /// The journal is locked by another running process.
    Locked = 5,
    /// CertCentral could not be reached (an outage past `--give-up-after`, or a server
    /// certificate that is not trusted); nothing was lost and unsent items are still pending.
    Unreachable = 6,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}
