//! The decision tables: every class of answer × attempts left, every lookup verdict × state.

use std::time::Duration;

use time::OffsetDateTime;

use super::*;
use crate::api::ServiceError;

pub(super) const MAX_ATTEMPTS: u32 = 5;
const SETTLE: Duration = Duration::from_secs(600);

pub(super) fn policy() -> Policy {
    Policy {
        max_attempts: MAX_ATTEMPTS,
        resend_uncertain: false,
        settle: SETTLE,
    }
}

pub(super) fn item(attempts: i64) -> WorkItem {
    WorkItem {
        id: 42,
        run_id: 1,
        order_id: 1042,
        payload: "{}".into(),
        attempts,
        first_sent_at: Some("2026-12-02T10:00:00Z".into()),
        updated_at: "2026-12-02T10:00:00Z".into(),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000)
}

/// A decision reduced to what the tables compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    /// The state of the item's last transition, if it moved.
    pub(super) to: Option<ItemState>,
    pub(super) follow: Follow,
    pub(super) effect: Kind,
    pub(super) note: NoteKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Follow {
    Nothing,
    SendNow,
    SendLater,
    LookUpNow,
    LookUpLater,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    None,
    Accepted,
    Pause,
    StopCredentials,
    StopUntrusted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoteKind {
    Nothing,
    MayArrive,
    Settling,
    Tried,
    Decided,
}

pub(super) fn shape(decision: &Decision) -> Shape {
    let to = decision
        .changes
        .iter()
        .rev()
        .find_map(|change| match change {
            Change::Transition { to, .. } => Some(*to),
            _ => None,
        });
    let follow = match &decision.follow_up {
        None => Follow::Nothing,
        Some(FollowUp {
            job: Job::Send(_),
            after,
        }) => match after {
            None => Follow::SendNow,
            Some(_) => Follow::SendLater,
        },
        Some(FollowUp {
            job: Job::LookUp { .. },
            after,
        }) => match after {
            None => Follow::LookUpNow,
            Some(_) => Follow::LookUpLater,
        },
    };
    let effect = match decision.effect {
        Effect::None => Kind::None,
        Effect::Accepted => Kind::Accepted,
        Effect::Pause(_) => Kind::Pause,
        Effect::Stop(StopReason::CredentialsRefused) => Kind::StopCredentials,
        Effect::Stop(StopReason::Untrusted) => Kind::StopUntrusted,
        Effect::Stop(other) => panic!("a decision stopped for {other:?}"),
    };
    let note = match decision.note {
        Note::Nothing => NoteKind::Nothing,
        Note::MayArriveUntil(_) => NoteKind::MayArrive,
        Note::Settling => NoteKind::Settling,
        Note::Tried(_) => NoteKind::Tried,
        Note::Decided => NoteKind::Decided,
    };
    Shape {
        to,
        follow,
        effect,
        note,
    }
}

fn status(code: u16, retry_after: Option<Duration>) -> Answer {
    Answer::from(Err(ApiError::Status {
        status: code,
        errors: vec![ServiceError {
            code: "some_code".into(),
            message: "some message".into(),
        }],
        retry_after,
    }))
}

/// A transport failure; reqwest's errors cannot be made by hand, the refusal can.
fn transport(disposition: Disposition, answer_lost: bool) -> Answer {
    Answer::Refused(Refusal {
        disposition,
        http_status: None,
        codes: None,
        messages: "connection trouble".into(),
        text: "connection trouble".into(),
        answer_lost,
    })
}

fn accepted() -> Answer {
    Answer::Accepted(Reissued {
        status: 201,
        request_id: Some(7),
        certificate_id: Some(8),
        dcv_random_value: None,
    })
}

pub(super) fn expect(to: ItemState, follow: Follow, effect: Kind, note: NoteKind) -> Shape {
    Shape {
        to: Some(to),
        follow,
        effect,
        note,
    }
}

#[test]
fn every_class_of_answer_with_and_without_attempts_left() {
    use Follow::*;
    use ItemState::*;
    type Case = (&'static str, fn() -> Answer, Shape, Shape);
    let (none, accepted_, pause, stop) = (
        Kind::None,
        Kind::Accepted,
        Kind::Pause,
        Kind::StopCredentials,
    );
    let (nothing, may_arrive) = (NoteKind::Nothing, NoteKind::MayArrive);
    #[rustfmt::skip]
    let cases: [Case; 15] = [
        // (answer, with attempts left, on the last attempt)
        ("201", accepted, expect(Succeeded, Nothing, accepted_, nothing), expect(Succeeded, Nothing, accepted_, nothing)),
        ("400", || status(400, None), expect(Failed, Nothing, none, nothing), expect(Failed, Nothing, none, nothing)),
        ("404", || status(404, None), expect(Failed, Nothing, none, nothing), expect(Failed, Nothing, none, nothing)),
        ("422", || status(422, None), expect(Failed, Nothing, none, nothing), expect(Failed, Nothing, none, nothing)),
        ("401", || status(401, None), expect(Pending, Nothing, stop, nothing), expect(Pending, Nothing, stop, nothing)),
        ("403", || status(403, None), expect(Pending, Nothing, stop, nothing), expect(Pending, Nothing, stop, nothing)),
        ("429", || status(429, Some(Duration::from_secs(3))), expect(Pending, SendNow, pause, nothing), expect(Pending, SendNow, pause, nothing)),
        ("503", || status(503, None), expect(Pending, SendNow, pause, nothing), expect(Pending, SendNow, pause, nothing)),
        ("500", || status(500, None), expect(Uncertain, LookUpLater, none, nothing), expect(Uncertain, LookUpLater, none, nothing)),
        ("502", || status(502, None), expect(Uncertain, LookUpLater, none, nothing), expect(Uncertain, LookUpLater, none, nothing)),
        ("504", || status(504, None), expect(Uncertain, LookUpLater, none, nothing), expect(Uncertain, LookUpLater, none, nothing)),
        ("answer lost", || transport(Disposition::Reconcile, true), expect(Uncertain, LookUpLater, none, may_arrive), expect(Uncertain, LookUpLater, none, may_arrive)),
        ("unreadable 2xx", || transport(Disposition::Reconcile, false), expect(Uncertain, LookUpLater, none, nothing), expect(Uncertain, LookUpLater, none, nothing)),
        ("never left", || transport(Disposition::Unreachable, false), expect(Pending, SendNow, none, nothing), expect(Pending, SendNow, none, nothing)),
        // The handshake refused the server's certificate: never left, and no retry can help.
        ("certificate refused", || transport(Disposition::StopUntrusted, false), expect(Pending, Nothing, Kind::StopUntrusted, nothing), expect(Pending, Nothing, Kind::StopUntrusted, nothing)),
    ];
    for (name, answer, with_left, on_last) in cases {
        for (attempts, expected) in [(1, with_left), (i64::from(MAX_ATTEMPTS), on_last)] {
            let decision = after_send(
                item(attempts),
                answer(),
                Duration::ZERO,
                &policy(),
                SendFacts::default(),
                now(),
            );
            assert_eq!(shape(&decision), expected, "{name} on attempt {attempts}");
            assert!(
                matches!(
                    decision.changes.first(),
                    Some(Change::FinishAttempt { item_id: 42, .. })
                ),
                "{name}: the attempt is finished first"
            );
            assert!(
                decision.changes.iter().all(|change| match change {
                    Change::Transition { from, .. } => *from == InFlight,
                    _ => true,
                }),
                "{name}: a send's answer moves the item from in_flight"
            );
        }
    }
}

#[test]
fn a_throttled_send_is_not_charged_and_waits_as_told_or_backs_off() {
    let decision = after_send(
        item(3),
        status(429, Some(Duration::from_secs(7))),
        Duration::ZERO,
        &policy(),
        SendFacts::default(),
        now(),
    );
    assert_eq!(decision.effect, Effect::Pause(Duration::from_secs(7)));
    let Some(FollowUp {
        job: Job::Send(again),
        ..
    }) = &decision.follow_up
    else {
        panic!("not sent again: {decision:?}");
    };
    assert_eq!(again.attempts, 2, "the copy in hand gives the attempt back");
    assert!(
        decision
            .changes
            .iter()
            .any(|c| matches!(c, Change::Transition { outcome, .. } if outcome.uncharged))
    );
    let decision = after_send(
        item(3),
        status(503, None),
        Duration::ZERO,
        &policy(),
        SendFacts {
            pauses: 2,
            outage: false,
        },
        now(),
    );
    assert_eq!(decision.effect, Effect::Pause(Duration::from_secs(4)));
}

#[test]
fn a_lost_answer_may_arrive_until_the_settle_window_ends() {
    let decision = after_send(
        item(1),
        transport(Disposition::Reconcile, true),
        Duration::ZERO,
        &policy(),
        SendFacts::default(),
        now(),
    );
    assert_eq!(decision.note, Note::MayArriveUntil(now() + SETTLE));
    assert_eq!(
        decision.follow_up.and_then(|f| f.after),
        Some(FIRST_LOOKUP_AFTER)
    );
}

#[test]
fn a_refused_key_leaves_the_item_pending_and_uncharged() {
    let decision = after_send(
        item(1),
        status(403, None),
        Duration::ZERO,
        &policy(),
        SendFacts::default(),
        now(),
    );
    assert!(decision.changes.iter().any(|c| matches!(c, Change::Transition { to: ItemState::Pending, outcome, .. } if outcome.uncharged)));
}

/// The attempts of the item in hand after the decision, and whether the journal takes the
/// attempt back.
fn charged(decision: &Decision) -> (i64, bool) {
    let attempts = match &decision.follow_up {
        Some(FollowUp {
            job: Job::Send(item) | Job::LookUp { item, .. },
            ..
        }) => item.attempts,
        None => panic!("no follow-up: {decision:?}"),
    };
    let uncharged = decision
        .changes
        .iter()
        .any(|c| matches!(c, Change::Transition { outcome, .. } if outcome.uncharged));
    (attempts, uncharged)
}

#[test]
fn a_send_that_never_left_is_not_charged_even_on_the_last_attempt_and_goes_again() {
    let decision = after_send(
        item(i64::from(MAX_ATTEMPTS)),
        transport(Disposition::Unreachable, false),
        Duration::ZERO,
        &policy(),
        SendFacts::default(),
        now(),
    );
    assert_eq!(charged(&decision), (i64::from(MAX_ATTEMPTS) - 1, true));
    assert_eq!(
        decision.effect,
        Effect::None,
        "the breaker pauses the run, not the decision"
    );
}

#[test]
fn a_5xx_or_a_lost_answer_during_an_outage_is_reconciled_but_not_charged() {
    let outage = SendFacts {
        pauses: 0,
        outage: true,
    };
    for (name, answer) in [
        ("500", status(500, None)),
        ("answer lost", transport(Disposition::Reconcile, true)),
    ] {
        let during = after_send(
            item(2),
            answer.clone(),
            Duration::ZERO,
            &policy(),
            outage,
            now(),
        );
        assert_eq!(shape(&during).to, Some(ItemState::Uncertain), "{name}");
        assert_eq!(charged(&during), (1, true), "{name} during an outage");
        let alone = after_send(
            item(2),
            answer,
            Duration::ZERO,
            &policy(),
            SendFacts::default(),
            now(),
        );
        assert_eq!(charged(&alone), (2, false), "{name} on its own");
    }
}
