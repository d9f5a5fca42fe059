//! Writers racing on one row, as several brokers and dispatchers do: the
//! database, not a read-then-write in Rust, decides who wins, and a loser
//! gets the winner's record or a retryable error, never a permanent one.

use std::sync::Arc;

use stoke_core::Retryable as _;
use stoke_store::*;

use super::{attempt, completion};

/// Run `op` until it succeeds or fails for good, as the platform's callers
/// do (`with_store_retries`): only retryable errors are retried.
async fn retrying<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    for _ in 0..100 {
        match op().await {
            Err(e) if e.is_retryable() => tokio::task::yield_now().await,
            other => return other,
        }
    }
    op().await
}

/// Concurrent deploys of one function number their versions 1..=n, each
/// once (PostgreSQL: an advisory lock; SQLite: one writer, and a stale
/// reader's write is SQLITE_BUSY_SNAPSHOT, retryable).
pub async fn concurrent_deploys(store: Arc<dyn Store>) {
    const N: u32 = 8;
    let mut tasks = Vec::new();
    for i in 0..N {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let digest = format!("cd-{i}");
            store.put_package(&digest, digest.as_bytes()).await.unwrap();
            let new = || NewVersion {
                function: "deployed",
                namespace: "default",
                digest: &digest,
                manifest: "",
                package_size: 4,
                image: "",
                now_ms: 1,
            };
            match retrying(|| store.deploy_version(new())).await {
                Ok(DeployOutcome::Created(v)) => v.version,
                other => panic!("deploy {i}: {other:?}"),
            }
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=N).collect::<Vec<_>>());
    let current = store.current_version("deployed").await.unwrap().unwrap();
    assert_eq!(current.version, N, "the last one numbered is current");
}

/// One redrive claim and one cron decision win; every other caller is told
/// so and sees the winner's decision.
pub async fn concurrent_claims(store: Arc<dyn Store>) {
    let dead = DeadLetter {
        invocation_id: "claimed".into(),
        function: "f".into(),
        version: 1,
        idempotency_key: "k".into(),
        trigger: "http".into(),
        payload: Vec::new(),
        reason: DeadReason::MaxAttempts,
        attempts: 3,
        error: None,
        created_ms: 1,
        dead_ms: 2,
        redriven_ms: None,
        redrive_count: 0,
    };
    store.record_dead_letter(None, &dead).await.unwrap();
    let outcomes = [
        TickOutcome::Fired,
        TickOutcome::CaughtUp,
        TickOutcome::SkippedOverlap,
        TickOutcome::MissedByPolicy,
    ];
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let tick = CronTick {
                schedule_id: "race".into(),
                function: "f".into(),
                scheduled_ms: 60_000,
                outcome: outcomes[i % 4],
                invocation_id: Some(format!("tick-{i}")),
                recorded_ms: i as i64,
            };
            let redriven = retrying(|| store.claim_redrive("claimed", 100 + i as i64))
                .await
                .unwrap();
            let decided = retrying(|| store.claim_tick(&tick)).await.unwrap();
            (redriven, tick, decided)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(results.iter().filter(|(redriven, ..)| *redriven).count(), 1);
    let winners: Vec<&CronTick> = results
        .iter()
        .filter(|(_, _, decided)| decided.is_none())
        .map(|(_, tick, _)| tick)
        .collect();
    assert_eq!(winners.len(), 1, "one decision per tick");
    for (_, _, decided) in &results {
        if let Some(seen) = decided {
            assert_eq!(seen, winners[0], "losers see the winner's decision");
        }
    }
    let row = store.dead_letter("claimed").await.unwrap().unwrap();
    assert_eq!(row.redrive_count, 1);
}

/// Batches that settle the same keys (a redelivered batch racing its
/// first delivery, on two dispatchers): each key completes once, every
/// batch attempt is metered.
pub async fn concurrent_batches(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for b in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let run = attempt(&format!("batch-run-{b}"), "batch", 1, AttemptOutcome::Success, 10);
            let items: Vec<Completion> = (0..4)
                .map(|k| completion(&format!("b{b}-item-{k}"), &format!("batch-key-{k}"), b"x"))
                .collect();
            retrying(|| store.record_batch(&run, &items)).await.unwrap()
        }));
    }
    let mut recorded = 0;
    for t in tasks {
        recorded += t.await.unwrap();
    }
    assert_eq!(recorded, 4, "each of the 4 keys completed once");
    for k in 0..4 {
        assert!(
            store
                .completion_by_key("f", &format!("batch-key-{k}"))
                .await
                .unwrap()
                .is_some()
        );
    }
    for b in 0..8 {
        assert_eq!(store.attempts(&format!("batch-run-{b}")).await.unwrap().len(), 1);
    }
}

/// PostgreSQL only (SQLite has one writer, so the two cannot interleave):
/// the dispatcher's `Stoke.WorkerLost` row for an epoch is committed while
/// the late result of that epoch is being recorded, after the late result
/// looked for it and found nothing. The late result still replaces it.
pub async fn late_result_racing_the_lost_row(url: &str, store: Arc<dyn Store>) {
    use sqlx::Connection as _;
    let id = "race-fenced";
    let mut dispatcher = sqlx::PgConnection::connect(url).await.unwrap();
    let mut lost = sqlx::Connection::begin(&mut dispatcher).await.unwrap();
    sqlx::query(
        "INSERT INTO attempts (invocation_id, function, version, idempotency_key, attempt, epoch, trigger, \
         worker, started_ms, ended_ms, duration_us, billed_ms, memory_mb, max_memory_used_kb, cold, \
         init_duration_us, outcome, error_type, error_message) \
         VALUES ($1, 'f', 1, 'k', 1, 1, 'http', 'w1', 1000, 1001, 5, 1, 512, 0, false, 0, \
         'platform_error', 'Stoke.WorkerLost', 'lost')",
    )
    .bind(id)
    .execute(&mut *lost)
    .await
    .unwrap();

    // The late result: its UPDATE and count see no committed row, so it
    // inserts, and the insert waits on the uncommitted lost row.
    let late = AttemptRecord {
        worker: "w1".into(),
        ..attempt(id, "k", 1, AttemptOutcome::Success, 9_000)
    };
    let recording = tokio::spawn({
        let store = store.clone();
        let late = late.clone();
        async move { store.record_fenced(&late).await }
    });
    let mut watcher = sqlx::PgConnection::connect(url).await.unwrap();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        assert!(!recording.is_finished(), "record_fenced did not wait for the lost row");
        assert!(std::time::Instant::now() < give_up, "record_fenced never waited");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    lost.commit().await.unwrap();
    recording.await.unwrap().unwrap();

    let rows = store.attempts(id).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].outcome, rows[0].duration_us, rows[0].error_type.as_deref()),
        (AttemptOutcome::Fenced, 9_000, None),
        "the late result replaced the lost row"
    );
}
