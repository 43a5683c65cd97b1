//! The lookup table: every verdict × the states an item can be looked up in.

use std::time::Duration;

use super::*;
use crate::runner::decide::FollowUp;
use crate::runner::decide::tests::{
    Follow, Kind, MAX_ATTEMPTS, NoteKind, Shape, expect, item, policy, shape,
};

fn record() -> LookupRecord {
    LookupRecord {
        started: std::time::Instant::now(),
        kind: "reissue_list",
        http_status: Some(200),
        outcome: "looked".into(),
        duration: Duration::from_millis(3),
    }
}

fn facts() -> LookupFacts {
    LookupFacts {
        own_run: true,
        paged_past: true,
        may_still_arrive: None,
        settle_looks: 0,
        tries: 0,
        stopping: false,
        pauses: 0,
        outage: false,
        refund: false,
    }
}

fn found() -> Verdict {
    Verdict::Found {
        request_id: None,
        certificate_id: Some(5),
    }
}

fn no_move(follow: Follow, effect: Kind, note: NoteKind) -> Shape {
    Shape {
        to: None,
        follow,
        effect,
        note,
    }
}

#[test]
fn every_lookup_verdict_in_each_state_it_can_meet() {
    use Follow::*;
    use ItemState::*;
    let settling = LookupFacts {
        may_still_arrive: Some(Duration::from_secs(30)),
        ..facts()
    };
    let last_try = LookupFacts {
        tries: LOOKUP_TRIES - 1,
        ..facts()
    };
    let not_reached = LookupFacts {
        paged_past: false,
        ..facts()
    };
    let other_run = LookupFacts {
        own_run: false,
        ..facts()
    };
    let stopping = LookupFacts {
        stopping: true,
        ..facts()
    };
    let outage = LookupFacts {
        outage: true,
        ..facts()
    };
    let down = |unreachable| Verdict::NoContact {
        why: "HTTP 500".into(),
        unreachable,
    };
    let resend = Policy {
        resend_uncertain: true,
        ..policy()
    };
    let max = i64::from(MAX_ATTEMPTS);
    type Case = (
        &'static str,
        Verdict,
        ItemState,
        i64,
        LookupFacts,
        Policy,
        Shape,
    );
    let (none, pause, stop) = (Kind::None, Kind::Pause, Kind::StopCredentials);
    let (nothing, settles, tried, decided) = (
        NoteKind::Nothing,
        NoteKind::Settling,
        NoteKind::Tried,
        NoteKind::Decided,
    );
    let undecided = || Verdict::Undecided("HTTP 500".into());
    let untrusted = || {
        Verdict::Untrusted(Box::new(crate::api::UntrustedServer {
            host: "www.digicert.com".into(),
            refusal: crate::api::Refusal::UnknownIssuer,
            reason: "invalid peer certificate: UnknownIssuer".into(),
            subject: None,
            issuer: Some("CN=Example Corp Inspection CA".into()),
            chain_issuer: None,
            not_after: None,
            trusted: Vec::new(),
        }))
    };
    let p = policy;
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // An outage: no try counted, the state kept, looked up again once CertCentral answers.
        ("no contact, outage", down(false), InFlight, 1, outage, p(), no_move(LookUpNow, none, nothing)),
        ("no contact, outage", down(true), Uncertain, max, outage, p(), no_move(LookUpNow, none, nothing)),
        // A lone 5xx to a lookup: a failed try like any other.
        ("no contact, no outage", down(false), InFlight, 1, facts(), p(), expect(Uncertain, LookUpLater, none, tried)),
        ("no contact, no outage", down(false), Uncertain, 1, last_try, p(), no_move(Nothing, none, decided)),
        ("found", found(), InFlight, 1, facts(), p(), expect(Succeeded, Nothing, none, decided)),
        ("found", found(), Uncertain, max, facts(), p(), expect(Succeeded, Nothing, none, decided)),
        ("not found, may still arrive", Verdict::NotFound, InFlight, 1, settling, p(), expect(Uncertain, LookUpLater, none, settles)),
        ("not found, may still arrive", Verdict::NotFound, Uncertain, 1, settling, p(), no_move(LookUpLater, none, settles)),
        ("not found", Verdict::NotFound, InFlight, 1, facts(), p(), expect(Pending, SendLater, none, decided)),
        ("not found", Verdict::NotFound, Uncertain, 1, facts(), p(), expect(Pending, SendLater, none, decided)),
        // The last allowed attempt was in flight when the run ended: it may have left, so no
        // further send.
        ("not found, budget spent", Verdict::NotFound, InFlight, max, facts(), p(), expect(Failed, Nothing, none, decided)),
        ("not found, budget spent, refunded", Verdict::NotFound, InFlight, max, LookupFacts { refund: true, ..facts() }, p(), expect(Pending, SendLater, none, decided)),
        ("not found, budget spent", Verdict::NotFound, Uncertain, max, facts(), p(), expect(Failed, Nothing, none, decided)),
        ("not found, pages not there yet", Verdict::NotFound, Uncertain, 1, not_reached, p(), expect(Pending, Nothing, none, decided)),
        ("not found, other run", Verdict::NotFound, InFlight, 1, other_run, p(), expect(Pending, Nothing, none, decided)),
        ("throttled", Verdict::Throttled(None), InFlight, 1, facts(), p(), no_move(LookUpNow, pause, nothing)),
        ("throttled", Verdict::Throttled(Some(Duration::from_secs(2))), Uncertain, 1, facts(), p(), no_move(LookUpNow, pause, nothing)),
        ("credentials", Verdict::Credentials, InFlight, 1, facts(), p(), no_move(Nothing, stop, decided)),
        ("credentials", Verdict::Credentials, Uncertain, 1, facts(), p(), no_move(Nothing, stop, decided)),
        // The lookup never reached CertCentral: the item keeps its state for the next run.
        ("certificate refused", untrusted(), InFlight, 1, facts(), p(), no_move(Nothing, Kind::StopUntrusted, decided)),
        ("certificate refused", untrusted(), Uncertain, 1, facts(), p(), no_move(Nothing, Kind::StopUntrusted, decided)),
        ("undecided", undecided(), InFlight, 1, facts(), p(), expect(Uncertain, LookUpLater, none, tried)),
        ("undecided", undecided(), Uncertain, 1, facts(), p(), no_move(LookUpLater, none, tried)),
        ("undecided, last try", undecided(), InFlight, 1, last_try, p(), expect(Uncertain, Nothing, none, decided)),
        ("undecided, last try", undecided(), Uncertain, 1, last_try, p(), no_move(Nothing, none, decided)),
        ("undecided, stopping", undecided(), Uncertain, 1, stopping, p(), no_move(Nothing, none, decided)),
        ("undecided, last try, --resend-uncertain", undecided(), Uncertain, 1, last_try, resend.clone(), expect(Pending, SendNow, none, decided)),
        ("undecided, last try, --resend-uncertain", undecided(), InFlight, 1, last_try, resend.clone(), expect(Pending, SendNow, none, decided)),
        ("undecided, last try, --resend-uncertain, other run", undecided(), Uncertain, 1, LookupFacts { own_run: false, ..last_try }, resend, no_move(Nothing, none, decided)),
    ];
    for (name, verdict, state, attempts, facts, policy, expected) in cases {
        let decision = after_lookup(item(attempts), state, verdict, record(), &facts, &policy);
        assert_eq!(
            shape(&decision),
            expected,
            "{name}, {state}, attempt {attempts}"
        );
        assert!(
            matches!(
                decision.changes.first(),
                Some(Change::Lookup { item_id: 42, .. })
            ),
            "{name}: the lookup is recorded first"
        );
        let mut at = state;
        for change in &decision.changes {
            if let Change::Transition { from, to, .. } = change {
                assert_eq!(
                    *from, at,
                    "{name}: transitions chain from the state in hand"
                );
                assert!(from.can_become(*to), "{name}: {from} cannot become {to}");
                at = *to;
            }
        }
    }
}

#[test]
fn a_reissue_that_may_still_arrive_is_looked_up_again_more_rarely_and_once_its_window_ends() {
    let after = |left: u64, looks: u32| {
        let facts = LookupFacts {
            may_still_arrive: Some(Duration::from_secs(left)),
            settle_looks: looks,
            ..facts()
        };
        let decision = after_lookup(
            item(1),
            ItemState::Uncertain,
            Verdict::NotFound,
            record(),
            &facts,
            &policy(),
        );
        assert!(
            !decision
                .changes
                .iter()
                .any(|c| matches!(c, Change::Transition { .. })),
            "an uncertain item stays uncertain while it may arrive"
        );
        match decision.follow_up {
            Some(FollowUp {
                job:
                    Job::LookUp {
                        state: ItemState::Uncertain,
                        ..
                    },
                after,
            }) => after,
            other => panic!("not looked up again: {other:?}"),
        }
    };
    assert_eq!(after(600, 0), Some(Duration::from_secs(1)));
    assert_eq!(after(600, 1), Some(Duration::from_secs(2)));
    assert_eq!(after(600, 3), Some(Duration::from_secs(8)));
    assert_eq!(after(600, 30), Some(Duration::from_secs(120)));
    assert_eq!(
        after(3, 5),
        Some(Duration::from_secs(3)),
        "the last look is at the window's end"
    );
}

#[test]
fn the_settle_interval_grows_to_two_minutes_and_stays_there() {
    let waits: Vec<u64> = (0..10).map(|n| settle_interval(n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
}

#[test]
fn an_attempt_charged_before_its_outage_was_known_is_given_back_when_it_goes_back_to_pending() {
    let refund = LookupFacts {
        refund: true,
        ..facts()
    };
    let max = i64::from(MAX_ATTEMPTS);
    let decision = after_lookup(
        item(max),
        ItemState::Uncertain,
        Verdict::NotFound,
        record(),
        &refund,
        &policy(),
    );
    assert!(
        decision.changes.iter().any(|c| matches!(
            c,
            Change::Transition { to: ItemState::Pending, outcome, .. } if outcome.uncharged
        )),
        "back to pending, the attempt given back: {decision:?}"
    );
    let Some(FollowUp {
        job: Job::Send(again),
        ..
    }) = decision.follow_up
    else {
        panic!("not sent again");
    };
    assert_eq!(again.attempts, max - 1);
}

#[test]
fn the_last_allowed_attempt_found_in_flight_and_not_received_fails_instead_of_going_again() {
    let max = i64::from(MAX_ATTEMPTS);
    let decision = after_lookup(
        item(max),
        ItemState::InFlight,
        Verdict::NotFound,
        record(),
        &facts(),
        &policy(),
    );
    assert!(
        decision.follow_up.is_none(),
        "no send beyond --max-attempts: {decision:?}"
    );
    assert!(
        decision.changes.iter().any(|c| matches!(
            c,
            Change::Transition { from: ItemState::InFlight, to: ItemState::Failed, outcome, .. }
                if outcome.failure_kind == Some("transient")
        )),
        "failed as transient: {decision:?}"
    );
}
