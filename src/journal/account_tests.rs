//! Runs are scoped by the account their key belonged to, not by the URL that reached it; runs
//! from before accounts were identified are matched by base URL until an identified run claims
//! them.

use super::*;

const URL_A: &str = "http://127.0.0.1:1/services/v2";
const URL_B: &str = "http://localhost:1/services/v2";

async fn journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("j.db")).await.expect("open");
    (dir, journal)
}

fn run_of(account_id: Option<i64>, base_url: &str) -> NewRun {
    NewRun {
        manifest: Some("orders.csv".into()),
        base_url: base_url.into(),
        account_id,
        options: serde_json::json!({}),
        force: false,
    }
}

/// Plans orders 1 and 2 (payload "a") as a run; returns its id and counts.
async fn plan(journal: &Journal, account_id: Option<i64>, base_url: &str) -> (i64, Counts) {
    let mut plan = journal
        .plan_run(&run_of(account_id, base_url))
        .await
        .expect("plan");
    for order_id in [1, 2] {
        plan.add_order(order_id, order_id + 1, "a", "d-a")
            .await
            .expect("add");
    }
    let counts = plan.settle().await.expect("settle").clone();
    (plan.commit().await.expect("commit"), counts)
}

/// Moves every pending item of the run to `to` (through `in_flight`).
async fn finish(journal: &Journal, run_id: i64, to: ItemState) {
    for item in journal.pending_page(run_id, 0, 100).await.expect("page") {
        let mut changes = vec![Change::MarkInFlight { item_id: item.id }];
        if to != ItemState::InFlight {
            changes.push(Change::Transition {
                item_id: item.id,
                from: ItemState::InFlight,
                to,
                outcome: Outcome::default(),
            });
        }
        journal.apply(&changes).await.expect("apply");
    }
}

#[tokio::test]
async fn a_success_through_one_url_is_skipped_through_another_of_the_same_account_only() {
    let (_dir, journal) = journal().await;
    let (first, _) = plan(&journal, Some(7), URL_A).await;
    finish(&journal, first, ItemState::Succeeded).await;

    let (_, same_account) = plan(&journal, Some(7), URL_B).await;
    assert_eq!(same_account.get(ItemState::Skipped), 2);

    let (_, other_account) = plan(&journal, Some(8), URL_A).await;
    assert_eq!(other_account.get(ItemState::Pending), 2);
}

#[tokio::test]
async fn old_runs_are_matched_by_url_until_an_identified_run_claims_them() {
    let (_dir, journal) = journal().await;
    let (old, _) = plan(&journal, None, URL_A).await;
    finish(&journal, old, ItemState::Succeeded).await;

    // An old-style run through the same URL still sees it.
    let (_, unidentified) = plan(&journal, None, URL_A).await;
    assert_eq!(unidentified.get(ItemState::Skipped), 2);

    // The first identified run through that URL claims the old runs for its account.
    let (_, claiming) = plan(&journal, Some(7), URL_A).await;
    assert_eq!(claiming.get(ItemState::Skipped), 2);
    let accounts: Vec<Option<i64>> = journal
        .runs()
        .await
        .expect("runs")
        .iter()
        .map(|run| run.account_id)
        .collect();
    assert_eq!(accounts, [Some(7); 3]);

    // Then they are that account's, through any URL, and no other account's.
    let (_, other_url) = plan(&journal, Some(7), URL_B).await;
    assert_eq!(other_url.get(ItemState::Skipped), 2);
    let (_, other_account) = plan(&journal, Some(8), URL_A).await;
    assert_eq!(other_account.get(ItemState::Pending), 2);
}

#[tokio::test]
async fn an_unknown_outcome_holds_back_and_is_reconciled_only_within_its_account() {
    let (_dir, journal) = journal().await;
    let (first, _) = plan(&journal, Some(7), URL_A).await;
    finish(&journal, first, ItemState::InFlight).await;

    let (same_account, _) = plan(&journal, Some(7), URL_B).await;
    assert!(
        journal
            .pending_page(same_account, 0, 100)
            .await
            .expect("page")
            .is_empty(),
        "orders whose outcome is unknown are held back"
    );
    let unknown = journal
        .unknown_outcomes_of_account(same_account)
        .await
        .expect("unknown");
    assert_eq!(unknown.len(), 2, "looked up through the second URL");

    let (other_account, _) = plan(&journal, Some(8), URL_A).await;
    assert_eq!(
        journal
            .pending_page(other_account, 0, 100)
            .await
            .expect("page")
            .len(),
        2
    );
    assert!(
        journal
            .unknown_outcomes_of_account(other_account)
            .await
            .expect("unknown")
            .is_empty()
    );
}

#[tokio::test]
async fn a_newer_run_takes_over_pending_orders_only_within_its_account() {
    let (_dir, journal) = journal().await;
    let (first, _) = plan(&journal, Some(7), URL_A).await;
    let (_, _) = plan(&journal, Some(8), URL_A).await;
    // Account 8's newer run does not take account 7's orders over: run 1 still sends them.
    assert_eq!(
        journal
            .pending_page(first, 0, 100)
            .await
            .expect("page")
            .len(),
        2
    );
    finish(&journal, 2, ItemState::Succeeded).await;
    assert_eq!(
        journal.newest_open_run().await.expect("open").map(|r| r.id),
        Some(first)
    );
    let (third, _) = plan(&journal, Some(7), URL_B).await;
    assert!(
        journal
            .pending_page(first, 0, 100)
            .await
            .expect("page")
            .is_empty()
    );
    assert_eq!(
        journal.newest_open_run().await.expect("open").map(|r| r.id),
        Some(third)
    );
}

#[tokio::test]
async fn continuing_an_old_run_claims_it_even_through_another_url() {
    let (_dir, journal) = journal().await;
    let (old, _) = plan(&journal, None, URL_A).await;
    let (other, _) = plan(&journal, None, "http://127.0.0.2:1/services/v2").await;
    let claimed = journal
        .claim_runs(7, URL_B, Some(old))
        .await
        .expect("claim");
    assert_eq!(claimed, 1);
    assert_eq!(journal.run(old).await.expect("run").account_id, Some(7));
    assert_eq!(journal.run(other).await.expect("run").account_id, None);
}
