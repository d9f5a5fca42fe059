//! Text as both backends must store it: ordered by bytes (SQLite's BINARY
//! collation; PostgreSQL's test databases sort linguistically unless the
//! schema says `COLLATE "C"`), and a function's error text with NUL in it
//! stored (PostgreSQL refuses NUL in `text`).

use stoke_store::*;

use super::{attempt, completion};

/// Byte order, as Rust's `Ord` for `String` is.
fn sorted(names: &[String]) -> Vec<String> {
    let mut v = names.to_vec();
    v.sort();
    v
}

pub async fn ordering_contract(store: &dyn Store) {
    // Case, punctuation and a non-ASCII letter: a linguistic collation
    // orders these differently from byte order.
    let names = ["b", "B", "a", "A", "_x", "a-b", "\u{e4}"];
    store.put_package("d-order", b"pkg").await.unwrap();
    for name in names {
        store
            .deploy_version(NewVersion {
                function: name,
                namespace: "default",
                digest: "d-order",
                manifest: "",
                package_size: 3,
                image: "",
                now_ms: 1,
            })
            .await
            .unwrap();
        let mut a = attempt(&format!("ord-{name}"), "k", 1, AttemptOutcome::Success, 1);
        a.function = name.into();
        store.record_attempt(&a).await.unwrap();
        let schedule = ScheduleDef {
            name: name.into(),
            function: name.into(),
            cron: "0 * * * * *".into(),
            timezone: "UTC".into(),
            overlap: "skip".into(),
            catch_up: "none".into(),
            catch_up_window_secs: 0,
            payload: None,
            paused: false,
            created_ms: 1,
            updated_ms: 1,
        };
        assert!(store.create_schedule(&schedule).await.unwrap());
        store
            .claim_tick(&CronTick {
                schedule_id: name.into(),
                function: "order".into(),
                scheduled_ms: 7,
                outcome: TickOutcome::Fired,
                invocation_id: None,
                recorded_ms: 7,
            })
            .await
            .unwrap();
        let dead = DeadLetter {
            invocation_id: format!("dl-{name}"),
            function: "order".into(),
            version: 1,
            idempotency_key: name.into(),
            trigger: "http".into(),
            payload: Vec::new(),
            reason: DeadReason::Expired,
            attempts: 0,
            error: None,
            created_ms: 1,
            dead_ms: 9,
            redriven_ms: None,
            redrive_count: 0,
        };
        store.record_dead_letter(None, &dead).await.unwrap();
    }

    let functions: Vec<String> = store
        .list_functions()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.function)
        .collect();
    assert!(names.iter().all(|n| functions.iter().any(|f| f == n)), "{functions:?}");
    assert_eq!(functions, sorted(&functions), "functions in byte order");

    let usage: Vec<String> = store
        .usage(&UsageFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.function)
        .collect();
    assert_eq!(usage, sorted(&usage), "usage rows in byte order");

    let schedules: Vec<String> = store.schedules().await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(schedules.len(), names.len());
    assert_eq!(schedules, sorted(&schedules), "schedules in byte order");

    let ticks: Vec<String> = store
        .cron_ticks(Some("order"), 0)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.schedule_id)
        .collect();
    assert_eq!(ticks.len(), names.len());
    assert_eq!(ticks, sorted(&ticks), "ticks of one time by schedule id, in byte order");

    let filter = DeadLetterFilter {
        function: Some("order".into()),
        ..Default::default()
    };
    let dead: Vec<String> = store
        .dead_letters(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.invocation_id)
        .collect();
    assert_eq!(dead.len(), names.len());
    assert_eq!(dead, sorted(&dead), "dead letters of one time by id, in byte order");

    for name in names {
        assert!(store.delete_schedule(name).await.unwrap());
    }

    // Attempts in number order; one number used twice (a fenced late
    // result and the attempt after it) in dispatch (epoch) order.
    for (n, epoch) in [(2, 5), (1, 9), (2, 3)] {
        store
            .record_attempt(&AttemptRecord {
                epoch,
                ..attempt("ord-attempts", "k", n, AttemptOutcome::Crashed, 1)
            })
            .await
            .unwrap();
    }
    let order: Vec<(u32, u64)> = store
        .attempts("ord-attempts")
        .await
        .unwrap()
        .iter()
        .map(|a| (a.attempt, a.epoch))
        .collect();
    assert_eq!(order, [(1, 9), (2, 3), (2, 5)]);
}

/// A NUL in a function's error type or message is stored as U+FFFD, the
/// same on both backends; everything around it is kept.
pub async fn error_text_contract(store: &dyn Store) {
    let (nul_type, nul_message) = ("Bad\0Type", "line 1\0line 2");
    let (stored_type, stored_message) = ("Bad\u{FFFD}Type", "line 1\u{FFFD}line 2");
    let id = "nul-1";
    let mut failed = attempt(id, "k-nul", 1, AttemptOutcome::FunctionError, 10);
    failed.error_type = Some(nul_type.into());
    failed.error_message = Some(nul_message.into());
    store.record_attempt(&failed).await.unwrap();
    let mut done = completion(id, "k-nul", b"\0binary results keep their bytes\0");
    done.status = Status::Failed;
    done.error = Some(ErrorRecord {
        error_type: nul_type.into(),
        error_message: nul_message.into(),
        raw: Some(b"{\"errorMessage\":\"\\u0000\"}\0".to_vec()),
    });
    let second = attempt(id, "k-nul", 2, AttemptOutcome::FunctionError, 10);
    assert_eq!(
        store.record_completion(&second, &done).await.unwrap(),
        CompletionWrite::Recorded
    );
    let rows = store.attempts(id).await.unwrap();
    assert_eq!(rows[0].error_type.as_deref(), Some(stored_type));
    assert_eq!(rows[0].error_message.as_deref(), Some(stored_message));
    let c = store.completion_by_key("f", "k-nul").await.unwrap().unwrap();
    let e = c.error.unwrap();
    assert_eq!(
        (e.error_type.as_str(), e.error_message.as_str()),
        (stored_type, stored_message)
    );
    assert_eq!(e.raw, done.error.as_ref().unwrap().raw, "raw bytes untouched");
    assert_eq!(c.result, done.result, "results are bytes, untouched");

    let dead = DeadLetter {
        invocation_id: "nul-dead".into(),
        function: "nul".into(),
        version: 1,
        idempotency_key: "k-nul-dead".into(),
        trigger: "http".into(),
        payload: b"\0".to_vec(),
        reason: DeadReason::TerminalError,
        attempts: 1,
        error: Some(ErrorRecord {
            error_type: nul_type.into(),
            error_message: nul_message.into(),
            raw: None,
        }),
        created_ms: 1,
        dead_ms: 2,
        redriven_ms: None,
        redrive_count: 0,
    };
    store.record_dead_letter(Some(&failed), &dead).await.unwrap();
    let got = store.dead_letter("nul-dead").await.unwrap().unwrap();
    let e = got.error.unwrap();
    assert_eq!(
        (e.error_type.as_str(), e.error_message.as_str()),
        (stored_type, stored_message)
    );
    assert_eq!(got.payload, b"\0");

    // A late result with NUL in its error, replacing a lost row and added.
    let fenced_id = "nul-fenced";
    let lost = AttemptRecord {
        error_type: Some("Stoke.WorkerLost".into()),
        ..attempt(fenced_id, "k", 1, AttemptOutcome::PlatformError, 1)
    };
    store.record_attempt(&lost).await.unwrap();
    let late = AttemptRecord {
        error_type: Some(nul_type.into()),
        error_message: Some(nul_message.into()),
        ..attempt(fenced_id, "k", 1, AttemptOutcome::FunctionError, 1)
    };
    store.record_fenced(&late).await.unwrap();
    store
        .record_fenced(&AttemptRecord {
            epoch: 99,
            ..late.clone()
        })
        .await
        .unwrap();
    let rows = store.attempts(fenced_id).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in rows {
        assert_eq!(row.outcome, AttemptOutcome::Fenced);
        assert_eq!(row.error_type.as_deref(), Some(stored_type));
        assert_eq!(row.error_message.as_deref(), Some(stored_message));
    }
}
