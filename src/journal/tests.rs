use std::os::unix::fs::PermissionsExt;

use super::*;

fn new_run() -> NewRun {
    NewRun {
        manifest: Some("orders.csv".into()),
        base_url: "http://127.0.0.1:1/services/v2".into(),
        options: serde_json::json!({}),
        force: false,
    }
}

async fn planned(journal: &Journal, orders: &[(u64, &str)]) -> i64 {
    let mut plan = journal.plan_run(&new_run()).await.expect("plan");
    for (line, (order_id, payload)) in orders.iter().enumerate() {
        plan.add_order(*order_id, line as u64 + 2, payload, &format!("d-{payload}"))
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

#[tokio::test]
async fn a_rolled_back_plan_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("j.db")).await.expect("open");
    let mut plan = journal.plan_run(&new_run()).await.expect("plan");
    plan.add_order(7, 2, "{}", "d").await.expect("add");
    plan.rollback().await.expect("rollback");
    assert!(journal.runs().await.expect("runs").is_empty());
}

#[tokio::test]
async fn identical_payload_that_succeeded_is_skipped_next_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("j.db")).await.expect("open");
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

#[tokio::test]
async fn many_rows_and_invalid_rows_with_a_repeated_order_id_are_planned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("j.db")).await.expect("open");
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

#[tokio::test]
async fn an_update_from_the_wrong_state_fails_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("j.db")).await.expect("open");
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

#[tokio::test]
async fn marking_a_set_with_one_item_not_pending_names_it_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("j.db")).await.expect("open");
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
