//! The store contract: every backend must pass these against a real database.

use stoke_store::*;

#[path = "contract/catalog.rs"]
mod catalog;
#[path = "contract/concurrency.rs"]
mod concurrency;
#[path = "contract/listing.rs"]
mod listing;
#[path = "contract/text.rs"]
mod text;

async fn sqlite() -> (tempfile::TempDir, std::sync::Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("stoke.db").display());
    let store = open(&url).await.unwrap();
    (dir, store)
}

/// A real PostgreSQL server (see `stoke_store::testing`) and a fresh
/// database on it, so tests run in parallel.
async fn postgres() -> (testing::Postgres, std::sync::Arc<dyn Store>) {
    let server = testing::Postgres::start().await.unwrap();
    let store = open(server.url()).await.unwrap();
    (server, store)
}

async fn full_contract(store: &dyn Store) {
    contract(store).await;
    fencing_contract(store).await;
    batch_contract(store).await;
    dead_letter_contract(store).await;
    running_contract(store).await;
    cron_ledger_contract(store).await;
    text::ordering_contract(store).await;
    text::error_text_contract(store).await;
    catalog::catalog_contract(store).await;
    catalog::config_contract(store).await;
    catalog::image_contract(store).await;
    catalog::registry_credentials_contract(store).await;
}

fn attempt(id: &str, key: &str, n: u32, outcome: AttemptOutcome, duration_us: u64) -> AttemptRecord {
    AttemptRecord {
        invocation_id: id.into(),
        function: "f".into(),
        version: 1,
        idempotency_key: key.into(),
        attempt: n,
        epoch: u64::from(n),
        trigger: "http".into(),
        worker: "w1".into(),
        started_ms: 1000,
        ended_ms: 1001,
        duration_us,
        memory_mb: 512,
        max_memory_used_kb: 1024,
        cold: n == 1,
        init_duration_us: 0,
        outcome,
        error_type: None,
        error_message: None,
    }
}

fn completion(id: &str, key: &str, result: &[u8]) -> Completion {
    Completion {
        function: "f".into(),
        idempotency_key: key.into(),
        invocation_id: id.into(),
        version: 1,
        status: Status::Succeeded,
        result: Some(result.to_vec()),
        error: None,
        attempts: 1,
        trigger: "http".into(),
        created_ms: 1000,
        completed_ms: 1001,
        payload_digest: Some("d-1".into()),
    }
}

async fn contract(store: &dyn Store) {
    // Packages and versions.
    store.put_package("d1", b"pkg").await.unwrap();
    store.put_package("d1", b"pkg").await.unwrap();
    assert_eq!(store.get_package("d1").await.unwrap().as_deref(), Some(&b"pkg"[..]));
    assert_eq!(store.get_package("nope").await.unwrap(), None);
    assert_eq!(store.package_size("d1").await.unwrap(), Some(3));
    assert_eq!(store.package_size("nope").await.unwrap(), None);
    let new = |digest: &'static str| NewVersion {
        function: "f",
        namespace: "default",
        digest,
        manifest: "name = \"f\"",
        package_size: 3,
        image: "",
        now_ms: 5,
    };
    let DeployOutcome::Created(v1) = store.deploy_version(new("d1")).await.unwrap() else {
        panic!()
    };
    assert_eq!(v1.version, 1);
    assert!(matches!(store.deploy_version(new("d1")).await.unwrap(), DeployOutcome::Unchanged(v) if v.version == 1));
    store.put_package("d2", b"pkg2").await.unwrap();
    let DeployOutcome::Created(v2) = store.deploy_version(new("d2")).await.unwrap() else {
        panic!()
    };
    assert_eq!(v2.version, 2);
    assert_eq!(store.current_version("f").await.unwrap().unwrap().digest, "d2");
    assert_eq!(store.get_version("f", 1).await.unwrap().unwrap().digest, "d1");
    assert_eq!(store.list_functions().await.unwrap().len(), 1);
    assert_eq!(store.current_version("g").await.unwrap(), None);

    // Accepted → queued; an attempt → running; completion → succeeded.
    let accepted = |digest: &str| Accepted {
        invocation_id: "i1".into(),
        function: "f".into(),
        idempotency_key: "k1".into(),
        trigger: "http".into(),
        created_ms: 1000,
        payload_digest: Some(digest.into()),
    };
    assert!(store.record_accepted(&accepted("d-1")).await.unwrap());
    assert!(
        !store.record_accepted(&accepted("d-other")).await.unwrap(),
        "already recorded"
    );
    assert_eq!(
        store.accepted("i1").await.unwrap(),
        Some(accepted("d-1")),
        "the first record stays"
    );
    assert_eq!(store.accepted("nope").await.unwrap(), None);
    assert_eq!(store.invocation("i1").await.unwrap().unwrap().status, Status::Queued);
    let mut failed = attempt("i1", "k1", 1, AttemptOutcome::Crashed, 1500);
    failed.error_type = Some("Runtime.ExitError".into());
    store.record_attempt(&failed).await.unwrap();
    store.record_attempt(&failed).await.unwrap(); // idempotent per attempt number
    assert_eq!(store.invocation("i1").await.unwrap().unwrap().status, Status::Running);
    let w = store
        .record_completion(
            &attempt("i1", "k1", 2, AttemptOutcome::Success, 2000),
            &completion("i1", "k1", b"ok"),
        )
        .await
        .unwrap();
    assert_eq!(w, CompletionWrite::Recorded);
    let view = store.invocation("i1").await.unwrap().unwrap();
    assert_eq!((view.status, view.attempts), (Status::Succeeded, 2));
    assert_eq!(view.completion.unwrap().result.as_deref(), Some(&b"ok"[..]));

    // A second completion for the same key is refused; the first is returned.
    let w = store
        .record_completion(
            &attempt("i2", "k1", 1, AttemptOutcome::Success, 1),
            &completion("i2", "k1", b"other"),
        )
        .await
        .unwrap();
    match w {
        CompletionWrite::Duplicate(c) => assert_eq!(
            (c.invocation_id.as_str(), c.result.as_deref()),
            ("i1", Some(&b"ok"[..]))
        ),
        other => panic!("expected duplicate, got {other:?}"),
    }
    assert!(
        store.invocation("i2").await.unwrap().is_none()
            || store.invocation("i2").await.unwrap().unwrap().completion.is_none()
    );
    assert_eq!(
        store.completion_by_key("f", "k1").await.unwrap().unwrap().invocation_id,
        "i1"
    );
    assert!(store.invocation("never").await.unwrap().is_none());

    // Usage: every attempt billed, rounded up to 1 ms.
    let rows = store.usage(&UsageFilter::default()).await.unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!((r.attempts, r.errors, r.cold_starts), (3, 1, 2));
    assert_eq!(r.billed_ms, 2 + 2 + 1);
    assert!((r.gb_seconds() - 5.0 * 512.0 / 1024.0 / 1000.0).abs() < 1e-12);
    let none = store
        .usage(&UsageFilter {
            since_ms: Some(2000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// An attempt seen under way makes an accepted event `running` before any
/// attempt is metered (a redriven one's too); once it ended, a late mark
/// changes nothing.
async fn running_contract(store: &dyn Store) {
    let accepted = Accepted {
        invocation_id: "run-1".into(),
        function: "f".into(),
        idempotency_key: "run-k1".into(),
        trigger: "http".into(),
        created_ms: 1000,
        payload_digest: Some("d-1".into()),
    };
    assert!(store.record_accepted(&accepted).await.unwrap());
    let status = async |id: &str| store.invocation(id).await.unwrap().map(|v| (v.status, v.attempts));
    assert_eq!(status("run-1").await, Some((Status::Queued, 0)));
    store.mark_running("run-1", 1200).await.unwrap();
    assert_eq!(
        status("run-1").await,
        Some((Status::Running, 0)),
        "under way, nothing metered yet"
    );
    assert_eq!(
        store.accepted("run-1").await.unwrap(),
        Some(accepted),
        "the record is otherwise unchanged"
    );
    // Never accepted here (a subject message): nothing to mark, no error.
    store.mark_running("run-never", 1200).await.unwrap();
    assert_eq!(status("run-never").await, None);

    let mut done = completion("run-1", "run-k1", b"ok");
    done.payload_digest = Some("d-1".into());
    let w = store
        .record_completion(&attempt("run-1", "run-k1", 1, AttemptOutcome::Success, 10), &done)
        .await
        .unwrap();
    assert_eq!(w, CompletionWrite::Recorded);
    store.mark_running("run-1", 1300).await.unwrap();
    assert_eq!(
        status("run-1").await,
        Some((Status::Succeeded, 1)),
        "a late mark changes nothing"
    );

    // Dead-lettered unrun (too old), then redriven: its new run is marked.
    let unrun = Accepted {
        invocation_id: "run-2".into(),
        idempotency_key: "run-k2".into(),
        ..store.accepted("run-1").await.unwrap().unwrap()
    };
    assert!(store.record_accepted(&unrun).await.unwrap());
    let dead = DeadLetter {
        invocation_id: "run-2".into(),
        function: "f".into(),
        version: 1,
        idempotency_key: "run-k2".into(),
        trigger: "http".into(),
        payload: b"{}".to_vec(),
        reason: DeadReason::Expired,
        attempts: 0,
        error: None,
        created_ms: 1000,
        dead_ms: 2000,
        redriven_ms: None,
        redrive_count: 0,
    };
    store.record_dead_letter(None, &dead).await.unwrap();
    assert_eq!(status("run-2").await, Some((Status::DeadLettered, 0)));
    assert!(store.claim_redrive("run-2", 3000).await.unwrap());
    assert_eq!(status("run-2").await, Some((Status::Queued, 0)), "redriven, waiting");
    store.mark_running("run-2", 3100).await.unwrap();
    assert_eq!(status("run-2").await, Some((Status::Running, 0)), "redriven, under way");
}

async fn dead_letter_contract(store: &dyn Store) {
    let dead = |dead_ms: i64| DeadLetter {
        invocation_id: "dl-1".into(),
        function: "g".into(),
        version: 1,
        idempotency_key: "k-dl".into(),
        trigger: "http".into(),
        payload: b"{\"x\":1}".to_vec(),
        reason: DeadReason::MaxAttempts,
        attempts: 3,
        error: Some(ErrorRecord {
            error_type: "ValueError".into(),
            error_message: "bad".into(),
            raw: None,
        }),
        created_ms: 500,
        dead_ms,
        redriven_ms: None,
        redrive_count: 0,
    };
    let mut last = attempt("dl-1", "k-dl", 3, AttemptOutcome::FunctionError, 10);
    last.function = "g".into();
    store.record_dead_letter(Some(&last), &dead(2000)).await.unwrap();
    let got = store.dead_letter("dl-1").await.unwrap().expect("stored");
    assert_eq!(got, dead(2000));
    let view = store.invocation("dl-1").await.unwrap().expect("known");
    assert_eq!(view.status, Status::DeadLettered);
    assert_eq!(view.attempts, 1, "the final attempt was metered with it");
    assert_eq!(store.attempts("dl-1").await.unwrap(), vec![last.clone()]);

    // Filters.
    let all = |f: DeadLetterFilter| async move { store.dead_letters(&f).await.unwrap() };
    assert_eq!(all(DeadLetterFilter::default()).await.len(), 1);
    let by_fn = DeadLetterFilter {
        function: Some("other".into()),
        ..Default::default()
    };
    assert!(all(by_fn).await.is_empty());
    let late = DeadLetterFilter {
        since_ms: Some(2001),
        ..Default::default()
    };
    assert!(all(late).await.is_empty());

    // A redrive is claimed once; a failed publish releases the claim.
    assert!(store.claim_redrive("dl-1", 3000).await.unwrap());
    assert!(
        !store.claim_redrive("dl-1", 3001).await.unwrap(),
        "second claim refused"
    );
    assert!(
        all(DeadLetterFilter::default()).await.is_empty(),
        "redriven ones hidden by default"
    );
    let with_redriven = DeadLetterFilter {
        include_redriven: true,
        ..Default::default()
    };
    assert_eq!(all(with_redriven).await[0].redriven_ms, Some(3000));
    store.release_redrive("dl-1", 3000).await.unwrap();
    assert!(store.claim_redrive("dl-1", 3002).await.unwrap());

    // Dead again after the redrive: the row is replaced and live again.
    store.record_dead_letter(None, &dead(4000)).await.unwrap();
    let again = store.dead_letter("dl-1").await.unwrap().unwrap();
    assert_eq!((again.dead_ms, again.redriven_ms, again.redrive_count), (4000, None, 1));
    assert!(!store.claim_redrive("nope", 1).await.unwrap());
}

async fn cron_ledger_contract(store: &dyn Store) {
    let tick = |ms: i64, outcome: TickOutcome, inv: Option<&str>| CronTick {
        schedule_id: "f:abc".into(),
        function: "f".into(),
        scheduled_ms: ms,
        outcome,
        invocation_id: inv.map(Into::into),
        recorded_ms: ms + 1,
    };
    assert_eq!(store.last_tick("f:abc", false).await.unwrap(), None);
    assert_eq!(
        store
            .claim_tick(&tick(1000, TickOutcome::Fired, Some("i-1")))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .claim_tick(&tick(1000, TickOutcome::SkippedOverlap, None))
            .await
            .unwrap(),
        Some(tick(1000, TickOutcome::Fired, Some("i-1"))),
        "decided once: the first decision is returned"
    );
    assert_eq!(
        store
            .claim_tick(&tick(2000, TickOutcome::MissedByPolicy, None))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.last_tick("f:abc", false).await.unwrap().unwrap().scheduled_ms,
        2000
    );
    assert_eq!(
        store.last_tick("f:abc", true).await.unwrap(),
        Some(tick(1000, TickOutcome::Fired, Some("i-1")))
    );
    let all = store.cron_ticks(Some("f"), 0).await.unwrap();
    assert_eq!(
        all.iter().map(|t| t.scheduled_ms).collect::<Vec<_>>(),
        [2000, 1000],
        "newest first"
    );
    assert!(store.cron_ticks(Some("g"), 0).await.unwrap().is_empty());
    assert_eq!(store.cron_ticks(None, 1).await.unwrap().len(), 1);

    // Admin schedules.
    let def = ScheduleDef {
        name: "nightly".into(),
        function: "f".into(),
        cron: "0 0 3 * * *".into(),
        timezone: "Europe/Berlin".into(),
        overlap: "skip".into(),
        catch_up: "latest".into(),
        catch_up_window_secs: 600,
        payload: Some(b"{}".to_vec()),
        paused: false,
        created_ms: 10,
        updated_ms: 10,
    };
    assert!(store.create_schedule(&def).await.unwrap());
    assert!(!store.create_schedule(&def).await.unwrap(), "names are unique");
    assert_eq!(store.schedules().await.unwrap(), vec![def.clone()]);
    assert!(store.set_schedule_paused("nightly", true, 20).await.unwrap());
    let paused = &store.schedules().await.unwrap()[0];
    assert!(paused.paused && paused.updated_ms == 20);
    assert!(!store.set_schedule_paused("nope", true, 20).await.unwrap());
    assert!(store.delete_schedule("nightly").await.unwrap());
    assert!(!store.delete_schedule("nightly").await.unwrap());
    assert!(store.schedules().await.unwrap().is_empty());
}

async fn batch_contract(store: &dyn Store) {
    let run = attempt("batch-1", "batch-1", 1, AttemptOutcome::Success, 2_500);
    let items = [
        completion("item-1", "k-item-1", b""),
        completion("item-2", "k-item-2", b""),
    ];
    assert_eq!(store.record_batch(&run, &items).await.unwrap(), 2);
    // Again (a redelivered batch): metered once, nothing new.
    assert_eq!(store.record_batch(&run, &items).await.unwrap(), 0);
    assert_eq!(store.attempts("batch-1").await.unwrap().len(), 1);
    assert!(store.completion_by_key("f", "k-item-2").await.unwrap().is_some());
    assert_eq!(
        store
            .record_batch(&attempt("batch-2", "batch-2", 1, AttemptOutcome::FunctionError, 1), &[])
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.attempts("batch-2").await.unwrap().len(), 1);
    // A key twice in one batch, and one already completed: recorded once.
    let mixed = [
        completion("item-3", "k-item-3", b""),
        completion("item-3b", "k-item-3", b""),
        completion("item-1b", "k-item-1", b""),
    ];
    let run = attempt("batch-3", "batch-3", 1, AttemptOutcome::Success, 10);
    assert_eq!(store.record_batch(&run, &mixed).await.unwrap(), 1);
    let kept = store.completion_by_key("f", "k-item-3").await.unwrap().unwrap();
    assert_eq!(kept.invocation_id, "item-3", "the first of the two holds the key");
    assert_eq!(
        store
            .completion_by_key("f", "k-item-1")
            .await
            .unwrap()
            .unwrap()
            .invocation_id,
        "item-1"
    );
    // More items than one statement takes: every one, each its own row.
    let many: Vec<Completion> = (0..1200)
        .map(|i| completion(&format!("many-{i}"), &format!("k-many-{i}"), format!("{i}").as_bytes()))
        .collect();
    let run = attempt("batch-4", "batch-4", 1, AttemptOutcome::Success, 10);
    assert_eq!(store.record_batch(&run, &many).await.unwrap(), 1200);
    for i in [0, 499, 500, 1199] {
        let c = store
            .completion_by_key("f", &format!("k-many-{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.invocation_id, c.result),
            (format!("many-{i}"), Some(format!("{i}").into_bytes()))
        );
    }
}

async fn fencing_contract(store: &dyn Store) {
    let id = "fence-1";
    assert_eq!(store.last_attempt(id).await.unwrap(), 0);
    // Attempt 1 ran on w1; the dispatcher lost w1 and metered it as lost.
    let lost = AttemptRecord {
        worker: "w1".into(),
        outcome: AttemptOutcome::PlatformError,
        error_type: Some("Stoke.WorkerLost".into()),
        epoch: 11,
        duration_us: 5,
        ..attempt(id, "k", 1, AttemptOutcome::PlatformError, 5)
    };
    store.record_attempt(&lost).await.unwrap();
    store.record_attempt(&lost).await.unwrap(); // a retried write counts once
    assert_eq!(store.last_attempt(id).await.unwrap(), 1);
    // Attempt 2 (epoch 12) completed elsewhere.
    let second = AttemptRecord {
        epoch: 12,
        worker: "w2".into(),
        ..attempt(id, "k", 2, AttemptOutcome::Success, 100)
    };
    store
        .record_completion(&second, &completion(id, "k", b"r"))
        .await
        .unwrap();
    assert_eq!(store.last_attempt(id).await.unwrap(), 2);
    // w1's late result for epoch 11 replaces the lost row, with w1's metering.
    let late = AttemptRecord {
        epoch: 11,
        worker: "w1".into(),
        duration_us: 9_000,
        error_type: None,
        ..attempt(id, "k", 1, AttemptOutcome::Success, 9_000)
    };
    store.record_fenced(&late).await.unwrap();
    store.record_fenced(&late).await.unwrap();
    let rows = store.attempts(id).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let fenced = rows.iter().find(|r| r.epoch == 11).unwrap();
    assert_eq!((fenced.outcome, fenced.duration_us), (AttemptOutcome::Fenced, 9_000));
    // A late report of an epoch that did complete changes nothing.
    store.record_fenced(&AttemptRecord { ..second.clone() }).await.unwrap();
    let rows = store.attempts(id).await.unwrap();
    assert_eq!(
        rows.iter().find(|r| r.epoch == 12).unwrap().outcome,
        AttemptOutcome::Success
    );
    // A late result the dispatcher never metered (it was restarted) is
    // added, even when its number was reused by the attempt after it.
    let unmetered = AttemptRecord {
        epoch: 10,
        ..attempt(id, "k", 2, AttemptOutcome::Crashed, 7)
    };
    store.record_fenced(&unmetered).await.unwrap();
    let rows = store.attempts(id).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows.iter().find(|r| r.epoch == 10).unwrap().outcome,
        AttemptOutcome::Fenced
    );
    assert_eq!(store.last_attempt(id).await.unwrap(), 2);
}

#[tokio::test]
async fn sqlite_passes_the_contract() {
    let (_dir, store) = sqlite().await;
    full_contract(store.as_ref()).await;
}

#[tokio::test]
async fn postgres_passes_the_contract() {
    let (_server, store) = postgres().await;
    full_contract(store.as_ref()).await;
}

#[tokio::test]
async fn sqlite_lists_invocations() {
    let (_dir, store) = sqlite().await;
    listing::listing_contract(store.as_ref()).await;
}

#[tokio::test]
async fn postgres_lists_invocations() {
    let (_server, store) = postgres().await;
    listing::listing_contract(store.as_ref()).await;
}

#[tokio::test]
async fn accepted_events_are_marked_ended_in_the_same_write_on_sqlite() {
    let (dir, store) = sqlite().await;
    listing::mark_ended(store.as_ref()).await;
    let url = format!("sqlite://{}", dir.path().join("stoke.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let ended: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT invocation_id, ended_ms FROM invocations ORDER BY invocation_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let ended: Vec<(&str, Option<i64>)> = ended.iter().map(|(id, ms)| (id.as_str(), *ms)).collect();
    assert_eq!(ended, listing::ENDED);
}

/// Migration 0012 on a store that has events in flight: an accepted event
/// already tried is listed running, one never tried queued.
#[tokio::test]
async fn events_tried_before_the_running_mark_existed_are_listed_running() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("stoke.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut before = sqlx::migrate!("../migrations/sqlite");
    let older: Vec<_> = before.migrations.iter().filter(|m| m.version < 12).cloned().collect();
    assert_eq!(older.len(), 11);
    before.migrations = older.into();
    before.run(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO invocations (invocation_id, function, idempotency_key, trigger, created_ms) \
         VALUES ('tried', 'f', 'k1', 'async', 1000), ('waiting', 'f', 'k2', 'async', 1001)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO attempts (invocation_id, function, version, idempotency_key, attempt, epoch, trigger, \
         worker, started_ms, ended_ms, duration_us, billed_ms, memory_mb, max_memory_used_kb, cold, \
         init_duration_us, outcome) \
         VALUES ('tried', 'f', 1, 'k1', 1, 1, 'async', 'w', 1100, 1200, 100000, 100, 128, 0, 1, 0, 'crashed')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let store = open(&format!("sqlite://{}", dir.path().join("stoke.db").display()))
        .await
        .unwrap();
    let listed = |status| {
        let store = store.clone();
        async move {
            let f = InvocationFilter {
                status: Some(status),
                ..Default::default()
            };
            let page = store.list_invocations(&f).await.unwrap();
            page.invocations
                .into_iter()
                .map(|i| i.invocation_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(Status::Running).await, ["tried"]);
    assert_eq!(listed(Status::Queued).await, ["waiting"]);
}

#[tokio::test]
async fn accepted_events_are_marked_ended_in_the_same_write_on_postgres() {
    let (server, store) = postgres().await;
    listing::mark_ended(store.as_ref()).await;
    let pool = sqlx::PgPool::connect(server.url()).await.unwrap();
    let ended: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT invocation_id, ended_ms FROM invocations ORDER BY invocation_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let ended: Vec<(&str, Option<i64>)> = ended.iter().map(|(id, ms)| (id.as_str(), *ms)).collect();
    assert_eq!(ended, listing::ENDED);
}

#[tokio::test]
async fn sqlite_sums_usage_per_namespace_and_period() {
    let (_dir, store) = sqlite().await;
    listing::usage_contract(store.as_ref()).await;
    listing::usage_rollup_contract(store.as_ref()).await;
}

#[tokio::test]
async fn postgres_sums_usage_per_namespace_and_period() {
    let (_server, store) = postgres().await;
    listing::usage_contract(store.as_ref()).await;
    listing::usage_rollup_contract(store.as_ref()).await;
}

#[tokio::test]
async fn concurrent_completions_for_one_key_record_exactly_one() {
    let (_dir, store) = sqlite().await;
    exactly_one_of_concurrent_completions(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_completions_for_one_key_record_exactly_one_on_postgres() {
    let (_server, store) = postgres().await;
    exactly_one_of_concurrent_completions(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_race_safely_on_sqlite() {
    let (_dir, store) = sqlite().await;
    concurrency::concurrent_deploys(store.clone()).await;
    concurrency::concurrent_claims(store.clone()).await;
    concurrency::concurrent_batches(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_race_safely_on_postgres() {
    let (_server, store) = postgres().await;
    concurrency::concurrent_deploys(store.clone()).await;
    concurrency::concurrent_claims(store.clone()).await;
    concurrency::concurrent_batches(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_result_racing_the_lost_row_replaces_it_on_postgres() {
    let (server, store) = postgres().await;
    concurrency::late_result_racing_the_lost_row(server.url(), store).await;
}

#[tokio::test]
async fn postgresql_urls_open_postgres_too() {
    let server = testing::Postgres::start().await.unwrap();
    let url = server.database().await.unwrap();
    let url = url.replacen("postgres://", "postgresql://", 1);
    assert!(url.starts_with("postgresql://"), "{url}");
    let store = open(&url).await.unwrap();
    store.put_package("d", b"x").await.unwrap();
    assert_eq!(store.get_package("d").await.unwrap().as_deref(), Some(&b"x"[..]));
}

/// A dead database is an error the platform retries (503 at the edge, NAK
/// in the dispatcher), never a panic or a silent success.
#[tokio::test]
async fn a_stopped_postgres_is_a_retryable_error() {
    use stoke_core::Retryable as _;
    let (mut server, store) = postgres().await;
    if !server.owns_server() {
        eprintln!("skipped: the STOKE_TEST_POSTGRES_URL server is not ours to stop");
        return;
    }
    store.put_package("d", b"x").await.unwrap();
    server.stop();
    let err = store.get_package("d").await.unwrap_err();
    assert!(err.is_retryable(), "a read: {err}");
    let err = store
        .record_completion(
            &attempt("i", "k", 1, AttemptOutcome::Success, 1),
            &completion("i", "k", b"r"),
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "a transaction: {err}");
    // A process starting while the database is down waits and retries too.
    let err = open(server.url()).await.err().expect("no server");
    assert!(err.is_retryable(), "opening: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_one_postgres_database_migrate_once() {
    let server = testing::Postgres::start().await.unwrap();
    let url = server.url().to_string();
    let opens = (0..6).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { stoke_store::open(&url).await.map(|_| ()) })
    });
    for r in futures_join(opens).await {
        r.expect("every concurrent open succeeds");
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let applied: Vec<(i64, bool)> = sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(applied, migrations("postgres"), "each migration applied once");
}

/// The versions in `migrations/<backend>`, each marked applied.
fn migrations(backend: &str) -> Vec<(i64, bool)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(backend);
    let mut versions: Vec<(i64, bool)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            (name.split('_').next().unwrap().parse().unwrap(), true)
        })
        .collect();
    versions.sort();
    versions
}

#[test]
fn both_backends_have_the_same_migrations() {
    let names = |backend: &str| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../migrations")
            .join(backend);
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("sqlite"), names("postgres"), "numbered and named alike");
}

/// Completions written at once (the store groups them into shared
/// transactions): one per key is recorded, every other call for that key is
/// answered with the winner's record, distinct keys are all recorded, a
/// repeat of a recorded invocation gets its own record back, and every
/// attempt is metered.
async fn exactly_one_of_concurrent_completions(store: std::sync::Arc<dyn Store>) {
    const N: usize = 48;
    let write = |store: std::sync::Arc<dyn Store>, id: String, key: String| async move {
        let answer = store
            .record_completion(
                &attempt(&id, &key, 1, AttemptOutcome::Success, 10),
                &completion(&id, &key, id.as_bytes()),
            )
            .await
            .unwrap();
        (id, key, answer)
    };
    let mut tasks = Vec::new();
    for i in 0..N {
        // Even: all one key; odd: a key each.
        let key = if i % 2 == 0 {
            "same".to_string()
        } else {
            format!("own-{i}")
        };
        tasks.push(tokio::spawn(write(store.clone(), format!("i{i}"), key)));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let winners: Vec<&String> = answers
        .iter()
        .filter(|(_, key, a)| key == "same" && *a == CompletionWrite::Recorded)
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(winners.len(), 1, "one completion for the shared key");
    let winner = winners[0].clone();
    for (id, key, answer) in &answers {
        match answer {
            CompletionWrite::Recorded => assert!(key != "same" || *id == winner),
            CompletionWrite::Duplicate(first) => {
                assert_eq!(key, "same", "{id}: a distinct key was refused");
                assert_eq!(first.invocation_id, winner, "{id} was told of another record");
                assert_eq!(first.result.as_deref(), Some(winner.as_bytes()));
            }
        }
    }
    // The same invocation again, as after a lost ack: its own record.
    let (_, _, again) = write(store.clone(), "i1".into(), "own-1".into()).await;
    match again {
        CompletionWrite::Duplicate(first) => assert_eq!(first.invocation_id, "i1"),
        other => panic!("a repeated completion was {other:?}"),
    }
    assert_eq!(
        store.usage(&UsageFilter::default()).await.unwrap()[0].attempts,
        N as u64,
        "every attempt metered once (the repeat's attempt row is the same row)"
    );
}

#[tokio::test]
async fn unsupported_url_is_a_clear_error() {
    let err = open("mysql://x").await.err().unwrap();
    assert!(
        err.to_string().contains("sqlite://") && err.to_string().contains("postgres://"),
        "{err}"
    );
}

/// A store over TLS to a real PostgreSQL with `ssl = on`: verify-full with
/// the CA that signed the server's certificate works, and the server says
/// the session is encrypted; another CA is refused at open, as a
/// configuration error that names sslrootcert.
#[tokio::test]
async fn postgres_over_tls_verifies_the_server_certificate() {
    use stoke_core::Retryable as _;
    let certs = stoke_store::test_certs::TestCerts::generate();
    let pg = testing::Postgres::start_with_tls(&certs.cert, &certs.key)
        .await
        .unwrap();
    let with_ca = |ca: &std::path::Path| format!("{}?sslmode=verify-full&sslrootcert={}", pg.url(), ca.display());

    let store = open(&with_ca(&certs.ca)).await.unwrap();
    assert!(store.list_functions().await.unwrap().is_empty());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&with_ca(&certs.ca))
        .await
        .unwrap();
    let (ssl,): (bool,) = sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(ssl, "the session is encrypted");

    let err = open(&with_ca(&certs.other_ca)).await.err().unwrap();
    assert!(!err.is_retryable() && err.to_string().contains("sslrootcert"), "{err}");

    // TLS required of a server without it: refused, saying so.
    let plain = testing::Postgres::start().await.unwrap();
    let err = open(&format!("{}?sslmode=require", plain.url())).await.err().unwrap();
    assert!(!err.is_retryable() && err.to_string().contains("ssl = on"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_one_sqlite_file_migrate_once() {
    // Broker and dispatcher processes open the same file at start.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let opens = (0..6).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { stoke_store::open(&url).await.map(|_| ()) })
    });
    for r in futures_join(opens).await {
        r.expect("every concurrent open succeeds");
    }
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let applied: Vec<(i64, bool)> = sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(applied, migrations("sqlite"), "each migration applied once");
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

/// SQLite only: commits never copy the WAL back themselves (that made the
/// commit crossing 1000 WAL pages take ~5 ms); the store's background
/// checkpointer does, so the database file grows shortly after the writes.
#[tokio::test]
async fn sqlite_checkpoints_the_wal_in_the_background() {
    let (dir, store) = sqlite().await;
    let db = dir.path().join("stoke.db");
    let wal = dir.path().join("stoke.db-wal");
    // Let the checkpoint of the migrations pass, then measure.
    tokio::time::sleep(SQLITE_CHECKPOINT_EVERY * 2).await;
    let before = std::fs::metadata(&db).unwrap().len();
    let result = vec![7u8; 2000];
    for i in 0..400 {
        let (id, key) = (format!("ck-{i}"), format!("key-{i}"));
        let w = store
            .record_completion(
                &attempt(&id, &key, 1, AttemptOutcome::Success, 10),
                &completion(&id, &key, &result),
            )
            .await
            .unwrap();
        assert!(matches!(w, CompletionWrite::Recorded));
    }
    let wal_len = std::fs::metadata(&wal).unwrap().len();
    assert!(wal_len > 1 << 20, "the writes are in the WAL: {wal_len} bytes");
    let deadline = std::time::Instant::now() + SQLITE_CHECKPOINT_EVERY * 10;
    loop {
        let after = std::fs::metadata(&db).unwrap().len();
        if after > before + (512 << 10) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {after} bytes (was {before}): nothing checkpointed the WAL"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
