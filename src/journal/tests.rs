use std::os::unix::fs::PermissionsExt;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::*;

#[path = "../../tests/it/pg_cluster.rs"]
mod pg_cluster;

/// Runs a behaviour test once on a new SQLite journal and once on a new PostgreSQL one (in a
/// throwaway cluster; skipped, saying why, where this machine has no PostgreSQL).
macro_rules! on_both_engines {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn on_sqlite() {
                let dir = tempfile::tempdir().expect("tempdir");
                let journal = super::Journal::open(&dir.path().join("j.db"))
                    .await
                    .expect("open");
                super::$name(journal).await;
            }

            #[tokio::test]
            async fn on_postgres() {
                let Some(url) = super::pg_cluster::fresh_database() else {
                    return;
                };
                let journal = super::Journal::open(std::path::Path::new(&url))
                    .await
                    .expect("open");
                super::$name(journal).await;
            }
        }
    };
}

fn new_run() -> NewRun {
    NewRun {
        manifest: Some("orders.csv".into()),
        base_url: "http://127.0.0.1:1/services/v2".into(),
        account_id: Some(42),
        options: serde_json::json!({}),
        force: false,
    }
}

async fn planned(journal: &Journal, orders: &[(u64, &str)]) -> i64 {
    let mut plan = journal.plan_run(&new_run()).await.expect("plan");
    for (line, (order_id, payload)) in orders.iter().enumerate() {
        plan.add_order(*order_id, line as u64 + 2, *payload, format!("d-{payload}"))
            .await
            .expect("add");
    }
    plan.commit().await.expect("commit")
}

#[tokio::test]
async fn new_journal_and_its_wal_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let journal = Journal::open(&path).await.expect("open");
    planned(&journal, &[(1, "{}")]).await;
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.path().join(format!("j.db{suffix}"));
        let mode = std::fs::metadata(&file)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    journal.close().await;
}

#[tokio::test]
async fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let first = Journal::open(&path).await.expect("open");
    let second = Journal::open(&path).await;
    assert!(matches!(second, Err(JournalError::Locked { .. })));
    first.close().await;
    Journal::open(&path)
        .await
        .expect("free again")
        .close()
        .await;
}

#[tokio::test]
async fn a_foreign_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "hello, this is not a database at all").expect("write");
    assert!(matches!(
        Journal::open(&text).await,
        Err(JournalError::NotAJournal { .. })
    ));
    assert_eq!(
        std::fs::read_to_string(&text).expect("read"),
        "hello, this is not a database at all"
    );

    let other = dir.path().join("other.db");
    let pool = connect_plain(&other).await;
    sqlx::query("CREATE TABLE t (x)")
        .execute(&pool)
        .await
        .expect("create");
    pool.close().await;
    assert!(matches!(
        Journal::open(&other).await,
        Err(JournalError::NotAJournal { .. })
    ));
}

#[tokio::test]
async fn a_journal_killed_before_its_first_migration_committed_opens() {
    // What the migrator leaves when the process dies between creating its own table and
    // committing the first migration.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.db");
    let pool = connect_plain(&path).await;
    sqlx::query(
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
         installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
         checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("create");
    pool.close().await;
    let journal = Journal::open(&path).await.expect("a journal to be");
    assert!(journal.runs().await.expect("runs").is_empty());
    journal.close().await;
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    Journal::open(&path).await.expect("open").close().await;
    let pool = connect_plain(&path).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99991231000000, 'future', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .expect("insert");
    pool.close().await;
    assert!(matches!(
        Journal::open(&path).await,
        Err(JournalError::NewerSchema { .. })
    ));
}

on_both_engines!(a_rolled_back_plan_leaves_nothing);
async fn a_rolled_back_plan_leaves_nothing(journal: Journal) {
    let mut plan = journal.plan_run(&new_run()).await.expect("plan");
    plan.add_order(7, 2, "{}", "d").await.expect("add");
    plan.rollback().await.expect("rollback");
    assert!(journal.runs().await.expect("runs").is_empty());
}

on_both_engines!(identical_payload_that_succeeded_is_skipped_next_time);
async fn identical_payload_that_succeeded_is_skipped_next_time(journal: Journal) {
    let run = planned(&journal, &[(1, "a"), (2, "b")]).await;
    let items = journal.pending_page(run, 0, 10).await.expect("page");
    for item in &items {
        journal
            .apply(&[
                Change::MarkInFlight { item_id: item.id },
                Change::Transition {
                    item_id: item.id,
                    from: ItemState::InFlight,
                    to: ItemState::Succeeded,
                    outcome: Outcome::default(),
                },
            ])
            .await
            .expect("apply");
    }
    let mut plan = journal.plan_run(&new_run()).await.expect("plan");
    plan.add_order(1, 2, "a", "d-a").await.expect("add");
    plan.add_order(2, 3, "b2", "d-b2").await.expect("add");
    let counts = plan.settle().await.expect("settle").clone();
    assert_eq!(counts.get(ItemState::Skipped), 1);
    assert_eq!(counts.get(ItemState::Pending), 1);
    let second = plan.commit().await.expect("commit");
    assert_eq!(journal.counts(second).await.expect("counts"), counts);
    let rows = journal.report_rows(second).await.expect("rows");
    assert_eq!((rows[0].order_id, rows[0].state.as_str()), (1, "skipped"));
    assert_eq!((rows[1].order_id, rows[1].state.as_str()), (2, "pending"));
}

on_both_engines!(verified_csrs_are_read_back_as_remembered);
async fn verified_csrs_are_read_back_as_remembered(journal: Journal) {
    assert!(journal.verified_csrs().await.expect("none yet").is_empty());
    let digests: Vec<crate::manifest::csr::CsrDigest> =
        (0..=255u8).map(|i| [i; 32]).chain([[0; 32]]).collect();
    let mut plan = journal.plan_run(&new_run()).await.expect("plan");
    plan.remember_verified_csrs(&digests)
        .await
        .expect("remember");
    plan.commit().await.expect("commit");
    let read = journal.verified_csrs().await.expect("read");
    assert_eq!(read, digests.into_iter().collect());
}

on_both_engines!(many_rows_and_invalid_rows_with_a_repeated_order_id_are_planned);
async fn many_rows_and_invalid_rows_with_a_repeated_order_id_are_planned(journal: Journal) {
    let mut plan = journal.plan_run(&new_run()).await.expect("plan");
    for id in 1..=1300u64 {
        plan.add_order(id, id + 1, "{}", &format!("d{id}"))
            .await
            .expect("add");
    }
    // The same order id again, invalid: the error itself may be the duplicate.
    plan.add_invalid(Some(7), 1400, "order_id: duplicate")
        .await
        .expect("add");
    plan.add_invalid(None, 1401, "order_id: not a number")
        .await
        .expect("add");
    let run = plan.commit().await.expect("commit");
    let counts = journal.counts(run).await.expect("counts");
    assert_eq!(counts.get(ItemState::Pending), 1300);
    assert_eq!(counts.get(ItemState::Invalid), 2);
    let rows = journal.report_rows(run).await.expect("rows");
    assert_eq!(rows.last().map(|r| (r.order_id, r.line)), Some((0, 1401)));
}

on_both_engines!(an_update_from_the_wrong_state_fails_and_changes_nothing);
async fn an_update_from_the_wrong_state_fails_and_changes_nothing(journal: Journal) {
    let run = planned(&journal, &[(1, "a")]).await;
    let item = journal
        .pending_page(run, 0, 10)
        .await
        .expect("page")
        .remove(0);
    let wrong = journal
        .apply(&[Change::Transition {
            item_id: item.id,
            from: ItemState::InFlight,
            to: ItemState::Succeeded,
            outcome: Outcome::default(),
        }])
        .await;
    assert!(matches!(wrong, Err(JournalError::StateConflict { .. })));
    let forbidden = journal
        .apply(&[Change::Transition {
            item_id: item.id,
            from: ItemState::Pending,
            to: ItemState::Succeeded,
            outcome: Outcome::default(),
        }])
        .await;
    assert!(matches!(
        forbidden,
        Err(JournalError::ForbiddenTransition { .. })
    ));
    assert_eq!(
        journal
            .counts(run)
            .await
            .expect("counts")
            .get(ItemState::Pending),
        1
    );
}

async fn connect_plain(path: &std::path::Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("connect")
}

on_both_engines!(marking_a_set_with_one_item_not_pending_names_it_and_changes_nothing);
async fn marking_a_set_with_one_item_not_pending_names_it_and_changes_nothing(journal: Journal) {
    let run = planned(&journal, &[(1, "a"), (2, "b"), (3, "c")]).await;
    let items = journal.pending_page(run, 0, 10).await.expect("page");
    let ids: Vec<i64> = items.iter().map(|item| item.id).collect();
    journal
        .apply(&[Change::MarkInFlight { item_id: ids[1] }])
        .await
        .expect("mark one");
    let marks: Vec<Change> = ids
        .iter()
        .map(|&item_id| Change::MarkInFlight { item_id })
        .collect();
    let wrong = journal.apply(&marks).await;
    assert!(
        matches!(wrong, Err(JournalError::StateConflict { item_id, .. }) if item_id == ids[1]),
        "{wrong:?}"
    );
    let counts = journal.counts(run).await.expect("counts");
    assert_eq!(counts.get(ItemState::Pending), 2);
    assert_eq!(counts.get(ItemState::InFlight), 1);
    journal
        .apply(&[
            Change::MarkInFlight { item_id: ids[0] },
            Change::MarkInFlight { item_id: ids[2] },
        ])
        .await
        .expect("mark the rest at once");
    assert_eq!(
        journal.request_count(run).await.expect("attempts"),
        3,
        "one attempt row per mark"
    );
}

/// Sends every pending item of the run with a 201 carrying `request_id = 1000 + order_id`.
async fn succeed_all(journal: &Journal, run: i64) {
    let items = journal.pending_page(run, 0, 1000).await.expect("page");
    for item in &items {
        journal
            .apply(&[
                Change::MarkInFlight { item_id: item.id },
                Change::Transition {
                    item_id: item.id,
                    from: ItemState::InFlight,
                    to: ItemState::Succeeded,
                    outcome: Outcome {
                        http_status: Some(201),
                        request_id: Some(1000 + item.order_id as u64),
                        certificate_id: Some(2000 + item.order_id as u64),
                        ..Outcome::default()
                    },
                },
            ])
            .await
            .expect("apply");
    }
}

on_both_engines!(a_skipped_order_reports_the_ids_of_the_success_it_stands_for);
async fn a_skipped_order_reports_the_ids_of_the_success_it_stands_for(journal: Journal) {
    let first = planned(&journal, &[(1, "a"), (2, "b")]).await;
    succeed_all(&journal, first).await;
    let second = planned(&journal, &[(2, "b"), (1, "a")]).await;
    let rows = journal.report_rows(second).await.expect("rows");
    let seen: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.order_id,
                r.state.as_str(),
                r.request_id,
                r.from_run,
                r.line,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (2, "skipped", Some(1002), Some(first), 2),
            (1, "skipped", Some(1001), Some(first), 3)
        ]
    );
    assert_eq!(rows[0].certificate_id, Some(2002));
    // A skipped order is no item: nothing of this run is left to send.
    assert!(
        journal
            .pending_page(second, 0, 10)
            .await
            .expect("page")
            .is_empty()
    );
    assert_eq!(journal.request_count(second).await.expect("requests"), 0);
}

on_both_engines!(an_item_found_done_after_planning_names_its_success_too);
async fn an_item_found_done_after_planning_names_its_success_too(journal: Journal) {
    // Two runs plan the same order before either sends it.
    let older = planned(&journal, &[(1, "a")]).await;
    let newer = {
        let mut plan = journal
            .plan_run(&NewRun {
                force: true,
                ..new_run()
            })
            .await
            .expect("plan");
        plan.add_order(1, 2, "a", "d-a").await.expect("add");
        plan.commit().await.expect("commit")
    };
    succeed_all(&journal, newer).await;
    assert_eq!(
        journal.skip_already_succeeded(older).await.expect("skip"),
        1
    );
    let rows = journal.report_rows(older).await.expect("rows");
    assert_eq!(
        (rows[0].state.as_str(), rows[0].request_id, rows[0].from_run),
        ("skipped", Some(1001), Some(newer))
    );
}

on_both_engines!(a_newer_run_that_skips_an_order_takes_it_over_from_an_older_pending_one);
async fn a_newer_run_that_skips_an_order_takes_it_over_from_an_older_pending_one(journal: Journal) {
    let done = planned(&journal, &[(1, "a")]).await;
    succeed_all(&journal, done).await;
    // An older plan with a changed payload, never sent; then the original payload again.
    let stale = planned(&journal, &[(1, "a2")]).await;
    let newest = planned(&journal, &[(1, "a")]).await;
    assert_eq!(
        journal
            .counts(newest)
            .await
            .expect("counts")
            .get(ItemState::Skipped),
        1
    );
    assert!(
        journal
            .pending_page(stale, 0, 10)
            .await
            .expect("page")
            .is_empty()
    );
    assert_eq!(
        journal.takeover(stale).await.expect("takeover"),
        (0, Some(newest))
    );
    assert!(journal.newest_open_run().await.expect("open").is_none());
}

on_both_engines!(prune_keeps_unfinished_runs_and_the_successes_later_runs_stand_for);
async fn prune_keeps_unfinished_runs_and_the_successes_later_runs_stand_for(journal: Journal) {
    let first = planned(&journal, &[(1, "a"), (2, "b")]).await;
    succeed_all(&journal, first).await;
    // Order 3 fails for good in run 2; run 3 is left unfinished; run 4 skips 1 and 2.
    let second = planned(&journal, &[(3, "c")]).await;
    let item = journal
        .pending_page(second, 0, 10)
        .await
        .expect("page")
        .remove(0);
    journal
        .apply(&[
            Change::MarkInFlight { item_id: item.id },
            Change::Transition {
                item_id: item.id,
                from: ItemState::InFlight,
                to: ItemState::Failed,
                outcome: Outcome::default(),
            },
        ])
        .await
        .expect("fail");
    let unfinished = planned(&journal, &[(5, "e")]).await;
    let fourth = planned(&journal, &[(1, "a"), (2, "b")]).await;

    let selection = PruneSelection {
        before: None,
        keep: Some(1),
    };
    let dry = journal.prune(&selection, true).await.expect("dry run");
    assert_eq!(
        journal.runs().await.expect("runs").len(),
        4,
        "a dry run removed"
    );
    let done = journal.prune(&selection, false).await.expect("prune");
    assert_eq!(dry.pruned, done.pruned);
    assert_eq!(done.spared, [Spared::Unfinished { run_id: unfinished }]);
    let pruned: Vec<(i64, u64, u64)> = done
        .pruned
        .iter()
        .map(|r| (r.run_id, r.items, r.kept_successes))
        .collect();
    assert_eq!(pruned, [(first, 0, 2), (second, 1, 0)]);
    let runs: Vec<i64> = journal
        .runs()
        .await
        .expect("runs")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(runs, [first, unfinished, fourth]);
    assert!(journal.run(first).await.expect("run 1").pruned_at.is_some());
    let rows = journal.report_rows(fourth).await.expect("rows");
    assert_eq!(
        rows.iter().map(|r| r.request_id).collect::<Vec<_>>(),
        [Some(1001), Some(1002)]
    );
    // Nothing is left to be stood for once the run that skipped is gone too.
    let again = journal
        .prune(
            &PruneSelection {
                before: Some("9999-01-01T00:00:00Z".into()),
                keep: None,
            },
            false,
        )
        .await
        .expect("prune all");
    assert_eq!(again.spared, [Spared::Unfinished { run_id: unfinished }]);
    let runs: Vec<i64> = journal
        .runs()
        .await
        .expect("runs")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(runs, [unfinished]);
}

on_both_engines!(prune_keeps_a_run_holding_orders_an_older_unfinished_run_has_pending);
async fn prune_keeps_a_run_holding_orders_an_older_unfinished_run_has_pending(journal: Journal) {
    // Run 1 is unfinished: order 1 is taken over by run 2, order 2 is still its own.
    let older = planned(&journal, &[(1, "old"), (2, "b")]).await;
    let newer = planned(&journal, &[(1, "new")]).await;
    succeed_all(&journal, newer).await;
    planned(&journal, &[(9, "z")]).await;
    let done = journal
        .prune(
            &PruneSelection {
                before: None,
                keep: Some(1),
            },
            false,
        )
        .await
        .expect("prune");
    assert!(done.pruned.is_empty(), "{:?}", done.pruned);
    assert_eq!(
        done.spared,
        [
            Spared::Unfinished { run_id: older },
            Spared::TakesOver {
                run_id: newer,
                older
            }
        ]
    );
}
