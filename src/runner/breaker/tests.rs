//! The breaker's states, waits and give-up time, with a fixed seed and no clock.

use super::*;

fn policy() -> Policy {
    Policy {
        trip_after: 3,
        first_probe: Duration::from_secs(1),
        max_probe: Duration::from_secs(8),
        give_up_after: Duration::from_secs(60),
    }
}

fn failed(order_id: i64) -> Signal {
    Signal::Failed {
        order_id,
        item_id: Some(order_id + 1000),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn answered(sent_at: Instant) -> Signal {
    Signal::Answered { sent_at }
}

#[test]
fn a_request_that_never_left_opens_it_at_once() {
    let now = Instant::now();
    let mut breaker = Breaker::new(policy(), 1);
    assert!(breaker.is_closed());
    assert_eq!(
        breaker.observe(Signal::Unreachable, now),
        Change::Tripped { items: vec![] }
    );
    assert!(!breaker.is_closed());
    let outage = breaker.outage().expect("an outage");
    assert_eq!(outage.since, now);
    assert_eq!(outage.failed_probes, 0);
}

#[test]
fn failures_about_three_different_orders_in_a_row_open_it_and_name_their_items() {
    let now = Instant::now();
    let mut breaker = Breaker::new(policy(), 1);
    assert_eq!(breaker.observe(failed(1), now), Change::None);
    assert_eq!(breaker.observe(failed(2), now), Change::None);
    assert_eq!(
        breaker.observe(failed(3), now),
        Change::Tripped {
            items: vec![1001, 1002, 1003]
        }
    );
}

#[test]
fn failures_just_before_a_request_that_never_left_are_named_as_part_of_the_outage() {
    let now = Instant::now();
    let mut breaker = Breaker::new(policy(), 1);
    assert_eq!(breaker.observe(failed(1), now), Change::None);
    assert_eq!(breaker.observe(failed(2), now), Change::None);
    assert_eq!(
        breaker.observe(Signal::Unreachable, now),
        Change::Tripped {
            items: vec![1001, 1002]
        }
    );
}

#[test]
fn one_order_failing_again_and_again_is_not_an_outage() {
    let now = Instant::now();
    let mut breaker = Breaker::new(policy(), 1);
    for _ in 0..10 {
        assert_eq!(breaker.observe(failed(7), now), Change::None);
    }
    assert!(breaker.is_closed());
    assert_eq!(breaker.observe(failed(8), now), Change::None);
    assert!(breaker.is_closed());
}

#[test]
fn an_answer_to_a_request_sent_after_the_failures_starts_the_count_again() {
    let t0 = Instant::now();
    let mut breaker = Breaker::new(policy(), 1);
    let _ = breaker.observe(failed(1), t0);
    let _ = breaker.observe(failed(2), t0);
    assert_eq!(
        breaker.observe(answered(t0 + secs(1)), t0 + secs(2)),
        Change::None
    );
    let _ = breaker.observe(failed(3), t0 + secs(3));
    assert_eq!(breaker.observe(failed(4), t0 + secs(3)), Change::None);
    assert!(breaker.is_closed());
}

#[test]
fn a_late_answer_to_a_request_sent_before_the_failures_keeps_them_counted() {
    // With requests in flight when an outage begins, an answer to one that left earlier can
    // arrive between its first failures: those must still be given back when it trips.
    let t0 = Instant::now();
    let mut breaker = Breaker::new(policy(), 1);
    let _ = breaker.observe(failed(1), t0 + secs(2));
    assert_eq!(breaker.observe(answered(t0), t0 + secs(3)), Change::None);
    let _ = breaker.observe(failed(2), t0 + secs(3));
    // Sent after the first failure was seen, before the second: only the first is cleared.
    assert_eq!(
        breaker.observe(answered(t0 + secs(2)), t0 + secs(4)),
        Change::None
    );
    let _ = breaker.observe(failed(3), t0 + secs(4));
    assert_eq!(
        breaker.observe(failed(4), t0 + secs(4)),
        Change::Tripped {
            items: vec![1002, 1003, 1004]
        }
    );
}

#[test]
fn an_order_failing_again_counts_as_of_its_latest_failure() {
    let t0 = Instant::now();
    let mut breaker = Breaker::new(policy(), 1);
    let _ = breaker.observe(failed(1), t0);
    let _ = breaker.observe(failed(1), t0 + secs(2));
    // Left after the first failure, before the second: order 1 still counts.
    assert_eq!(
        breaker.observe(answered(t0 + secs(1)), t0 + secs(3)),
        Change::None
    );
    let _ = breaker.observe(failed(2), t0 + secs(3));
    assert_eq!(
        breaker.observe(failed(3), t0 + secs(3)),
        Change::Tripped {
            items: vec![1001, 1002, 1003]
        }
    );
}

#[test]
fn nothing_is_probed_before_the_wait_and_only_one_probe_at_a_time() {
    let t0 = Instant::now();
    let mut breaker = Breaker::new(policy(), 1);
    let _ = breaker.observe(Signal::Unreachable, t0);
    // The first wait is 0.5 s to 1 s.
    assert!(!breaker.start_probe(t0 + Duration::from_millis(499)));
    assert!(breaker.start_probe(t0 + secs(1)));
    assert!(!breaker.start_probe(t0 + secs(100)), "one probe at a time");
    assert_eq!(breaker.outage().expect("outage").next_probe, None);
}

#[test]
fn failed_probes_wait_longer_each_time_up_to_the_cap_with_jitter() {
    for seed in 0..50 {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(policy(), seed);
        let _ = breaker.observe(Signal::Unreachable, t0);
        let mut now = t0 + secs(1);
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(breaker.start_probe(now));
            assert_eq!(
                breaker.probe_ended(Signal::Unreachable, now),
                Change::StillDown
            );
            let next = breaker
                .outage()
                .and_then(|o| o.next_probe)
                .expect("next probe");
            waits.push(next - now);
            now = next;
        }
        // Bases 2, 4, 8, 8 … s: each wait is within [base/2, base].
        let bases = [2, 4, 8, 8, 8, 8, 8, 8];
        for (wait, base) in waits.iter().zip(bases) {
            assert!(
                *wait >= secs(base) / 2 && *wait <= secs(base),
                "seed {seed}: {waits:?}"
            );
        }
        assert_eq!(breaker.outage().expect("outage").failed_probes, 8);
        assert_eq!(breaker.outage().expect("outage").since, t0);
    }
}

#[test]
fn the_same_seed_gives_the_same_waits() {
    let t0 = Instant::now();
    let waits = |seed| {
        let mut breaker = Breaker::new(policy(), seed);
        let _ = breaker.observe(Signal::Unreachable, t0);
        breaker.outage().and_then(|o| o.next_probe)
    };
    assert_eq!(waits(5), waits(5));
}

#[test]
fn a_probe_that_is_answered_closes_it_and_says_how_long_it_lasted() {
    let t0 = Instant::now();
    let mut breaker = Breaker::new(policy(), 1);
    let _ = breaker.observe(Signal::Unreachable, t0);
    assert!(breaker.start_probe(t0 + secs(1)));
    assert_eq!(
        breaker.probe_ended(answered(t0 + secs(1)), t0 + secs(2)),
        Change::Recovered { lasted: secs(2) }
    );
    assert!(breaker.is_closed());
    assert_eq!(breaker.outage(), None);
    assert_eq!(breaker.give_up_at(), None);
}

#[test]
fn a_5xx_probe_counts_as_failed() {
    let t0 = Instant::now();
    let mut breaker = Breaker::new(policy(), 1);
    let _ = breaker.observe(Signal::Unreachable, t0);
    assert!(breaker.start_probe(t0 + secs(1)));
    assert_eq!(
        breaker.probe_ended(failed(1), t0 + secs(1)),
        Change::StillDown
    );
    assert!(!breaker.is_closed());
}

#[test]
fn late_ends_of_requests_sent_before_the_outage_neither_end_nor_extend_it() {
    let t0 = Instant::now();
    let mut breaker = Breaker::new(policy(), 1);
    let _ = breaker.observe(Signal::Unreachable, t0 + secs(1));
    assert_eq!(breaker.observe(failed(1), t0 + secs(2)), Change::None);
    assert_eq!(
        breaker.observe(Signal::Unreachable, t0 + secs(2)),
        Change::None
    );
    assert_eq!(breaker.observe(answered(t0), t0 + secs(2)), Change::None);
    assert_eq!(breaker.outage().expect("outage").since, t0 + secs(1));
}

#[test]
fn an_answer_to_a_request_sent_during_the_outage_ends_it_and_a_late_probe_failure_does_not_reopen_it()
 {
    let t0 = Instant::now();
    let mut breaker = Breaker::new(policy(), 1);
    let _ = breaker.observe(Signal::Unreachable, t0);
    assert!(breaker.start_probe(t0 + secs(1)));
    assert_eq!(
        breaker.observe(answered(t0 + secs(1)), t0 + secs(3)),
        Change::Recovered { lasted: secs(3) }
    );
    // The probe still out then fails: a fresh failure, judged like any other.
    assert_eq!(breaker.probe_ended(failed(2), t0 + secs(4)), Change::None);
    assert!(breaker.is_closed());
}

#[test]
fn it_gives_up_once_the_outage_lasted_longer_than_allowed() {
    let t0 = Instant::now();
    let mut breaker = Breaker::new(
        Policy {
            give_up_after: secs(5),
            ..policy()
        },
        1,
    );
    assert!(!breaker.gives_up(t0 + secs(100)), "no outage, no giving up");
    assert_eq!(breaker.next_wake(), None);
    let _ = breaker.observe(Signal::Unreachable, t0);
    assert_eq!(breaker.give_up_at(), Some(t0 + secs(5)));
    assert!(!breaker.gives_up(t0 + secs(4)));
    assert!(breaker.gives_up(t0 + secs(5)));
    // Probes come first while they are due before it.
    let wake = breaker.next_wake().expect("a wake");
    assert!(wake <= t0 + secs(1));
    assert!(breaker.start_probe(wake));
    assert_eq!(breaker.next_wake(), Some(t0 + secs(5)));
}

#[test]
fn every_state_and_signal_lands_in_the_expected_state() {
    #[derive(Debug, Clone, Copy)]
    enum From {
        Closed,
        Open,
        Probing,
    }
    let t0 = Instant::now();
    // (state before, signal to `observe`, closed after?)
    let (before, during) = (answered(t0 - secs(1)), answered(t0 + secs(1)));
    let table = [
        (From::Closed, before, true),
        (From::Closed, during, true),
        (From::Closed, failed(1), true),
        (From::Closed, Signal::Unreachable, false),
        (From::Open, before, false),
        (From::Open, during, true),
        (From::Open, failed(1), false),
        (From::Open, Signal::Unreachable, false),
        (From::Probing, before, false),
        (From::Probing, during, true),
        (From::Probing, failed(1), false),
        (From::Probing, Signal::Unreachable, false),
    ];
    for (from, signal, closed_after) in table {
        let mut breaker = Breaker::new(policy(), 1);
        if !matches!(from, From::Closed) {
            let _ = breaker.observe(Signal::Unreachable, t0);
        }
        if matches!(from, From::Probing) {
            assert!(breaker.start_probe(t0 + secs(1)));
        }
        let _ = breaker.observe(signal, t0 + secs(2));
        assert_eq!(breaker.is_closed(), closed_after, "{from:?} + {signal:?}");
    }
}
