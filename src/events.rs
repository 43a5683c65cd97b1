//! What the runner tells whoever listens (the progress display); it does not know who that is.

use std::time::Duration;

use time::OffsetDateTime;

use crate::journal::Counts;

/// Why a run stopped, ordered from least to most telling: a run that has several reasons to
/// stop reports the one that tells the operator most (a 401 that arrives after Ctrl-C says the
/// key is refused, not merely that someone pressed Ctrl-C). A stop only ever raises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopReason {
    /// Nothing left that this run can send or decide.
    Finished,
    /// SIGINT/SIGTERM: nothing new was sent after it.
    Interrupted,
    /// CertCentral stayed unreachable longer than `--give-up-after`. Outranks an interrupt (the
    /// operator knows they pressed Ctrl-C, not that CertCentral was down), and is outranked by
    /// a refused key (CertCentral answered after all, and resuming is no use until the key is
    /// fixed).
    Unreachable,
    /// The server's certificate is not trusted: nothing can be sent until it is. Outranks an
    /// outage (it says why CertCentral cannot be reached, and waiting will not fix it).
    Untrusted,
    /// CertCentral refused the key (401/403).
    CredentialsRefused,
}

impl StopReason {
    /// The reason once `other` is also known: whichever tells more.
    #[must_use]
    pub fn raised(self, other: Self) -> Self {
        self.max(other)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Finished => "finished",
            StopReason::Interrupted => "interrupted",
            StopReason::Unreachable => "CertCentral unreachable",
            StopReason::CredentialsRefused => "credentials refused",
            StopReason::Untrusted => "server certificate not trusted",
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
    /// The run stops (a signal, a refused key or certificate, an outage given up on): no new
    /// sends, waiting for requests in flight.
    Stopping { reason: StopReason },
    /// CertCentral cannot be reached (or answers only 5xx): every worker is paused. Sent when the
    /// outage begins and after each probe that fails.
    Unreachable {
        /// When the outage began.
        since: OffsetDateTime,
        /// The last failure, in a few words.
        cause: String,
        /// When the next probe goes out, from now.
        next_probe_in: Duration,
    },
    /// CertCentral answers again after an outage this long; sending resumes.
    Reachable { lasted: Duration },
    /// The outage that began at `since` lasted longer than `--give-up-after`: the run stops.
    GivingUp { since: OffsetDateTime },
    /// All that is left is waiting out `--settle`: `items` whose answers were lost may still
    /// take effect at CertCentral, the last of them until `until`. They are looked up meanwhile
    /// and decided then; nothing is resent before.
    Settling { items: usize, until: OffsetDateTime },
}

#[cfg(test)]
mod tests {
    use super::StopReason::{self, *};

    const ALL: [StopReason; 5] = [
        Finished,
        Interrupted,
        Unreachable,
        Untrusted,
        CredentialsRefused,
    ];

    #[test]
    fn an_untrusted_certificate_outranks_an_outage_and_is_outranked_by_a_refused_key() {
        assert!(Unreachable < Untrusted && Untrusted < CredentialsRefused);
        assert_eq!(Unreachable.raised(Untrusted), Untrusted);
        assert_eq!(Interrupted.raised(Untrusted), Untrusted);
    }

    #[test]
    fn credentials_refused_outranks_an_interrupt_which_outranks_finishing() {
        assert!(Finished < Interrupted);
        assert!(Interrupted < CredentialsRefused);
        assert!(Interrupted < Unreachable && Unreachable < CredentialsRefused);
        assert_eq!(Interrupted.raised(Unreachable), Unreachable);
        assert_eq!(Unreachable.raised(CredentialsRefused), CredentialsRefused);
        assert_eq!(Interrupted.raised(CredentialsRefused), CredentialsRefused);
        assert_eq!(CredentialsRefused.raised(Interrupted), CredentialsRefused);
    }

    #[test]
    fn raising_a_stop_never_lowers_it_whatever_the_order_of_arrival() {
        for first in ALL {
            for second in ALL {
                let raised = first.raised(second);
                assert!(
                    raised >= first && raised >= second,
                    "{first:?} then {second:?}"
                );
                assert_eq!(raised, second.raised(first), "{first:?} and {second:?}");
            }
        }
    }
}
