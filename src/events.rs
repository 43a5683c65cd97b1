//! What the runner tells whoever listens (the progress display); it does not know who that is.

use std::time::Duration;

use crate::journal::Counts;

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Nothing left that this run can send or decide.
    Finished,
    /// SIGINT/SIGTERM: nothing new was sent after it.
    Interrupted,
    /// CertCentral refused the key (401/403).
    CredentialsRefused,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Finished => "finished",
            StopReason::Interrupted => "interrupted",
            StopReason::CredentialsRefused => "credentials refused",
        }
    }
}

/// A change worth showing.
#[derive(Debug, Clone)]
pub enum RunnerEvent {
    /// Counts per state of the run after a batch of changes, and requests made so far.
    Progress { counts: Counts, requests: u64 },
    /// CertCentral throttled (429/503): every worker waits this long.
    Paused { wait: Duration },
    /// Items whose outcome is unknown are being looked up before anything is sent.
    Reconciling { items: usize },
    /// A signal arrived: no new sends, waiting for requests in flight.
    Stopping,
}
