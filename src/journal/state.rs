//! Item states and the one function that says which transitions are allowed.

use std::fmt;
use std::str::FromStr;

/// Where one order of a run stands; the contract's meaning for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemState {
    /// Not sent yet.
    Pending,
    /// Durably marked before the request left; a crash leaves it here.
    InFlight,
    /// A request may have reached CertCentral but no answer was recorded.
    Uncertain,
    /// CertCentral answered 201; its ids are recorded.
    Succeeded,
    /// CertCentral rejected it, or attempts ran out.
    Failed,
    /// The same order with the identical payload already succeeded in this journal.
    Skipped,
    /// The manifest row was invalid (only with `--skip-invalid`).
    Invalid,
}

impl ItemState {
    pub const ALL: [ItemState; 7] = [
        ItemState::Pending,
        ItemState::InFlight,
        ItemState::Uncertain,
        ItemState::Succeeded,
        ItemState::Failed,
        ItemState::Skipped,
        ItemState::Invalid,
    ];

    /// The allowed transitions. A pending item becomes `Skipped` when its identical payload
    /// succeeded in another run first; `Invalid` is decided when a run is planned; `Succeeded`,
    /// `Skipped` and `Invalid` are final.
    pub fn can_become(self, next: Self) -> bool {
        use ItemState::*;
        matches!(
            (self, next),
            (Pending, InFlight | Skipped)
                | (InFlight, Succeeded | Failed | Uncertain | Pending)
                | (Uncertain, Succeeded | Failed | Pending)
                | (Failed, Pending)
        )
    }

    /// Whether the item still needs work (sending or reconciling).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            ItemState::Pending | ItemState::InFlight | ItemState::Uncertain
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::InFlight => "in_flight",
            ItemState::Uncertain => "uncertain",
            ItemState::Succeeded => "succeeded",
            ItemState::Failed => "failed",
            ItemState::Skipped => "skipped",
            ItemState::Invalid => "invalid",
        }
    }
}

impl fmt::Display for ItemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name in the journal that this version does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown item state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for ItemState {
    type Err = UnknownState;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ItemState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| UnknownState(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::ItemState::{self, *};

    #[test]
    fn every_pair_of_states_matches_the_table() {
        // Rows: from; columns: to, in ItemState::ALL order.
        let table: [(ItemState, [bool; 7]); 7] = [
            (Pending, [false, true, false, false, false, true, false]),
            (InFlight, [true, false, true, true, true, false, false]),
            (Uncertain, [true, false, false, true, true, false, false]),
            (Succeeded, [false; 7]),
            (Failed, [true, false, false, false, false, false, false]),
            (Skipped, [false; 7]),
            (Invalid, [false; 7]),
        ];
        for (from, row) in table {
            for (to, allowed) in ItemState::ALL.into_iter().zip(row) {
                assert_eq!(from.can_become(to), allowed, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for state in ItemState::ALL {
            assert_eq!(state.as_str().parse::<ItemState>().expect("known"), state);
        }
        assert!("done".parse::<ItemState>().is_err());
    }
}
