//! Listing invocations (every status from the table it lives in, filters,
//! paging) and usage per function or namespace, per hour or day.

use stoke_store::*;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// `alpha` (team-a, 512 MB) and `beta` (team-b).
async fn deploy_two(store: &dyn Store) {
    store.put_package("lst", b"pkg").await.unwrap();
    for (function, namespace) in [("alpha", "team-a"), ("beta", "team-b")] {
        let out = store
            .deploy_version(NewVersion {
                function,
                namespace,
                digest: "lst",
                manifest: "",
                package_size: 3,
                image: "",
                now_ms: 1,
            })
            .await
            .unwrap();
        assert!(matches!(out, DeployOutcome::Created(_)), "{out:?}");
    }
}

fn attempt(id: &str, function: &str, started_ms: i64, outcome: AttemptOutcome) -> AttemptRecord {
    AttemptRecord {
        invocation_id: id.into(),
        function: function.into(),
        version: 1,
        idempotency_key: id.into(),
        attempt: 1,
        epoch: 1,
        trigger: "http".into(),
        worker: "w1".into(),
        started_ms,
        ended_ms: started_ms + 1000,
        duration_us: 1_000_000,
        memory_mb: 512,
        max_memory_used_kb: 1024,
        cold: false,
        init_duration_us: 0,
        error_type: (outcome != AttemptOutcome::Success).then(|| "ValueError".into()),
        error_message: (outcome != AttemptOutcome::Success).then(|| "bad".into()),
        outcome,
    }
}

fn completion(id: &str, function: &str, created_ms: i64, status: Status) -> Completion {
    Completion {
        function: function.into(),
        idempotency_key: format!("key-{id}"),
        invocation_id: id.into(),
        version: 1,
        status,
        result: (status == Status::Succeeded).then(|| b"{}".to_vec()),
        error: (status != Status::Succeeded).then(|| ErrorRecord {
            error_type: if status == Status::TimedOut {
                "Sandbox.Timedout"
            } else {
                "ValueError"
            }
            .into(),
            error_message: format!("{id} went wrong"),
            raw: None,
        }),
        attempts: 1,
        trigger: "http".into(),
        created_ms,
        completed_ms: created_ms + 10,
        payload_digest: None,
    }
}

fn dead(id: &str, created_ms: i64) -> DeadLetter {
    DeadLetter {
        invocation_id: id.into(),
        function: "alpha".into(),
        version: 1,
        idempotency_key: format!("key-{id}"),
        trigger: "async".into(),
        payload: b"{}".to_vec(),
        reason: DeadReason::MaxAttempts,
        attempts: 3,
        error: Some(ErrorRecord {
            error_type: "ValueError".into(),
            error_message: "out of attempts".into(),
            raw: None,
        }),
        created_ms,
        dead_ms: created_ms + 50,
        redriven_ms: None,
        redrive_count: 0,
    }
}

fn accepted(id: &str, function: &str, created_ms: i64) -> Accepted {
    Accepted {
        invocation_id: id.into(),
        function: function.into(),
        idempotency_key: format!("key-{id}"),
        trigger: "async".into(),
        created_ms,
        payload_digest: None,
    }
}

async fn complete(store: &dyn Store, c: &Completion) {
    let mut a = attempt(&c.invocation_id, &c.function, c.created_ms, AttemptOutcome::Success);
    a.attempt = c.attempts;
    a.epoch = u64::from(c.attempts);
    a.idempotency_key = c.idempotency_key.clone();
    let w = store.record_completion(&a, c).await.unwrap();
    assert_eq!(w, CompletionWrite::Recorded);
}

async fn list(store: &dyn Store, f: InvocationFilter) -> Vec<InvocationSummary> {
    let page = store.list_invocations(&f).await.unwrap();
    assert!(page.next.is_none(), "one page expected: {f:?}");
    page.invocations
}

fn ids(list: &[InvocationSummary]) -> Vec<&str> {
    list.iter().map(|i| i.invocation_id.as_str()).collect()
}

pub async fn listing_contract(store: &dyn Store) {
    deploy_two(store).await;
    let empty = store.list_invocations(&InvocationFilter::default()).await.unwrap();
    assert_eq!(
        empty,
        InvocationPage {
            invocations: vec![],
            next: None
        }
    );

    // Finished: succeeded (accepted first, as keyed events are), failed,
    // timed out.
    store.record_accepted(&accepted("s1", "alpha", 1000)).await.unwrap();
    complete(store, &completion("s1", "alpha", 1000, Status::Succeeded)).await;
    complete(store, &completion("f1", "alpha", 2000, Status::Failed)).await;
    complete(store, &completion("t1", "beta", 3000, Status::TimedOut)).await;
    // Dead-lettered (its last attempt metered with it).
    store.record_accepted(&accepted("d1", "alpha", 4000)).await.unwrap();
    let mut last = attempt("d1", "alpha", 4010, AttemptOutcome::FunctionError);
    last.attempt = 3;
    store.record_dead_letter(Some(&last), &dead("d1", 4000)).await.unwrap();
    // Redriven, not finished again yet: queued.
    store.record_dead_letter(None, &dead("r1", 5000)).await.unwrap();
    assert!(store.claim_redrive("r1", 5100).await.unwrap());
    // Redriven and then completed under the same id: succeeded, once.
    store.record_dead_letter(None, &dead("r2", 6000)).await.unwrap();
    assert!(store.claim_redrive("r2", 6100).await.unwrap());
    let mut redone = completion("r2", "alpha", 6000, Status::Succeeded);
    redone.attempts = 4;
    complete(store, &redone).await;
    // Accepted only: queued; one failed attempt so far (running: between
    // attempts, with the attempt's version); one seen under way (running).
    store.record_accepted(&accepted("q1", "beta", 7000)).await.unwrap();
    store.record_accepted(&accepted("q2", "alpha", 7500)).await.unwrap();
    let mut tried = attempt("q2", "alpha", 7600, AttemptOutcome::Crashed);
    tried.version = 3;
    store.record_attempt(&tried).await.unwrap();
    store.record_accepted(&accepted("q3", "alpha", 7700)).await.unwrap();
    store.mark_running("q3", 7800).await.unwrap();
    // Three created in the same millisecond: ordered by id, descending.
    for id in ["tie-b", "tie-c", "tie-a"] {
        complete(store, &completion(id, "alpha", 8000, Status::Succeeded)).await;
    }
    // Redriven after a metered attempt (running: tried, not ended again);
    // accepted, dead-lettered unrun, redriven and seen under way (running).
    let tried = attempt("r3", "alpha", 8510, AttemptOutcome::FunctionError);
    store.record_dead_letter(Some(&tried), &dead("r3", 8500)).await.unwrap();
    assert!(store.claim_redrive("r3", 8600).await.unwrap());
    store.record_accepted(&accepted("r4", "alpha", 8700)).await.unwrap();
    store.record_dead_letter(None, &dead("r4", 8700)).await.unwrap();
    assert!(store.claim_redrive("r4", 8800).await.unwrap());
    store.mark_running("r4", 8900).await.unwrap();

    let all = list(store, InvocationFilter::default()).await;
    assert_eq!(
        ids(&all),
        [
            "r4", "r3", "tie-c", "tie-b", "tie-a", "q3", "q2", "q1", "r2", "r1", "d1", "t1", "f1", "s1"
        ]
    );
    let by_id = |id: &str| all.iter().find(|i| i.invocation_id == id).unwrap().clone();
    let status_of = |id: &str| by_id(id).status;
    assert_eq!(status_of("s1"), Status::Succeeded);
    assert_eq!(status_of("f1"), Status::Failed);
    assert_eq!(status_of("t1"), Status::TimedOut);
    assert_eq!(status_of("d1"), Status::DeadLettered);
    assert_eq!(status_of("r1"), Status::Queued);
    assert_eq!(
        status_of("r2"),
        Status::Succeeded,
        "a completed redrive is not dead any more"
    );
    assert_eq!(status_of("q1"), Status::Queued);
    assert_eq!(status_of("q2"), Status::Running);
    assert_eq!(status_of("q3"), Status::Running);
    assert_eq!(status_of("r3"), Status::Running);
    assert_eq!(status_of("r4"), Status::Running);
    // One invocation's view says what its listing row says.
    for row in &all {
        let view = store.invocation(&row.invocation_id).await.unwrap();
        assert_eq!(view.map(|v| v.status), Some(row.status), "{row:?}");
    }

    // What each row carries.
    let f1 = by_id("f1");
    assert_eq!(
        (f1.function.as_str(), f1.namespace.as_str(), f1.version, f1.attempts),
        ("alpha", "team-a", 1, 1)
    );
    assert_eq!((f1.created_ms, f1.completed_ms), (2000, 2010));
    assert_eq!(f1.idempotency_key, "key-f1");
    assert_eq!(f1.trigger, "http");
    let err = f1.error.expect("failed has its error");
    assert_eq!(
        (err.error_type.as_str(), err.error_message.as_str()),
        ("ValueError", "f1 went wrong")
    );
    assert_eq!(by_id("t1").error.unwrap().error_type, "Sandbox.Timedout");
    assert_eq!(by_id("t1").namespace, "team-b");
    assert_eq!(by_id("s1").error, None);
    let d1 = by_id("d1");
    assert_eq!((d1.attempts, d1.completed_ms, d1.trigger.as_str()), (3, 4050, "async"));
    assert_eq!(d1.error.unwrap().error_message, "out of attempts");
    let r1 = by_id("r1");
    assert_eq!((r1.completed_ms, r1.error), (0, None), "a redriven one has not ended");
    assert_eq!(by_id("r2").attempts, 4);
    let q1 = by_id("q1");
    assert_eq!((q1.version, q1.attempts, q1.completed_ms), (0, 0, 0));
    assert_eq!(
        (q1.idempotency_key.as_str(), q1.namespace.as_str()),
        ("key-q1", "team-b")
    );
    let q2 = by_id("q2");
    assert_eq!((q2.version, q2.attempts), (3, 1));

    // Each status filter finds exactly its rows.
    let with_status = |s: Status| {
        list(
            store,
            InvocationFilter {
                status: Some(s),
                ..Default::default()
            },
        )
    };
    assert_eq!(
        ids(&with_status(Status::Succeeded).await),
        ["tie-c", "tie-b", "tie-a", "r2", "s1"]
    );
    assert_eq!(ids(&with_status(Status::Failed).await), ["f1"]);
    assert_eq!(ids(&with_status(Status::TimedOut).await), ["t1"]);
    assert_eq!(ids(&with_status(Status::DeadLettered).await), ["d1"]);
    assert_eq!(ids(&with_status(Status::Queued).await), ["q1", "r1"]);
    assert_eq!(ids(&with_status(Status::Running).await), ["r4", "r3", "q3", "q2"]);

    // Function, namespace, created window, key; combined.
    let only = |f: InvocationFilter| list(store, f);
    let beta = only(InvocationFilter {
        function: Some("beta".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&beta), ["q1", "t1"]);
    let team_b = only(InvocationFilter {
        namespace: Some("team-b".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&team_b), ["q1", "t1"]);
    let nobody = only(InvocationFilter {
        namespace: Some("team-z".into()),
        ..Default::default()
    })
    .await;
    assert!(nobody.is_empty());
    let window = only(InvocationFilter {
        since_ms: Some(2000),
        until_ms: Some(5000),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&window), ["d1", "t1", "f1"], "since inclusive, until exclusive");
    for key in ["key-s1", "key-d1", "key-r1", "key-q2"] {
        let keyed = only(InvocationFilter {
            idempotency_key: Some(key.into()),
            ..Default::default()
        })
        .await;
        assert_eq!(ids(&keyed), [&key[4..]], "{key}");
    }
    let combined = only(InvocationFilter {
        function: Some("alpha".into()),
        namespace: Some("team-a".into()),
        status: Some(Status::Running),
        since_ms: Some(7600),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&combined), ["r4", "r3", "q3"]);
    let mismatch = only(InvocationFilter {
        function: Some("alpha".into()),
        namespace: Some("team-b".into()),
        ..Default::default()
    })
    .await;
    assert!(mismatch.is_empty(), "alpha is not team-b's");

    // Paging, through ties and every table: no gaps, no repeats, and the
    // last page says so.
    for limit in [1, 2, 3, 4, 10, 13, 14] {
        let pages = pages(store, InvocationFilter::default(), limit).await;
        let seen: Vec<&str> = pages.iter().flat_map(|p| ids(&p.invocations)).collect();
        assert_eq!(seen, ids(&all), "limit {limit}");
        assert_eq!(pages.len(), 14usize.div_ceil(limit as usize), "limit {limit}");
        assert!(pages.iter().all(|p| p.invocations.len() <= limit as usize));
    }
    // The window and the cursor together: the lower bound of the two holds.
    let windowed = pages(
        store,
        InvocationFilter {
            since_ms: Some(2000),
            until_ms: Some(7000),
            ..Default::default()
        },
        2,
    )
    .await;
    let seen: Vec<&str> = windowed.iter().flat_map(|p| ids(&p.invocations)).collect();
    assert_eq!(seen, ["r2", "r1", "d1", "t1", "f1"]);
    let queued_pages = pages(
        store,
        InvocationFilter {
            status: Some(Status::Queued),
            ..Default::default()
        },
        1,
    )
    .await;
    let seen: Vec<&str> = queued_pages.iter().flat_map(|p| ids(&p.invocations)).collect();
    assert_eq!(seen, ["q1", "r1"]);
    let default_limit = store.list_invocations(&InvocationFilter::default()).await.unwrap();
    assert_eq!(default_limit.invocations.len(), 14, "limit 0 is 50");
}

/// Every page of a listing, following `next`.
async fn pages(store: &dyn Store, mut f: InvocationFilter, limit: u32) -> Vec<InvocationPage> {
    f.limit = limit;
    let mut out = Vec::new();
    loop {
        let page = store.list_invocations(&f).await.unwrap();
        let next = page.next.clone();
        out.push(page);
        match next {
            Some(cursor) => f.after = Some(cursor),
            None => return out,
        }
        assert!(out.len() < 100, "paging does not end");
    }
}

fn row(namespace: &str, function: &str, bucket_ms: i64, attempts: u64, errors: u64) -> UsageRow {
    UsageRow {
        namespace: namespace.into(),
        function: function.into(),
        bucket_ms,
        attempts,
        errors,
        cold_starts: 0,
        // Every attempt here runs 1 s at 512 MB.
        billed_ms: attempts * 1000,
        mb_ms: attempts * 1000 * 512,
    }
}

pub async fn usage_contract(store: &dyn Store) {
    deploy_two(store).await;
    // An hour boundary (UTC): 100 h after the epoch is day 4, 04:00.
    let h = 100 * HOUR;
    let day = 4 * DAY;
    // Started before the boundary, ended after it: counted whole in the
    // hour it started in.
    store
        .record_attempt(&attempt("u1", "alpha", h - 500, AttemptOutcome::Success))
        .await
        .unwrap();
    store
        .record_attempt(&attempt("u2", "alpha", h, AttemptOutcome::Success))
        .await
        .unwrap();
    store
        .record_attempt(&attempt("u3", "alpha", h + HOUR - 1, AttemptOutcome::FunctionError))
        .await
        .unwrap();
    store
        .record_attempt(&attempt("u4", "beta", h + 30, AttemptOutcome::Timeout))
        .await
        .unwrap();
    store
        .record_attempt(&attempt("u5", "beta", day + DAY, AttemptOutcome::Success))
        .await
        .unwrap();
    // A function the catalog does not know: namespace ''.
    store
        .record_attempt(&attempt("u6", "ghost", h, AttemptOutcome::Success))
        .await
        .unwrap();

    let usage = |f: UsageFilter| async move { store.usage(&f).await.unwrap() };
    assert_eq!(
        usage(UsageFilter::default()).await,
        [
            row("team-a", "alpha", 0, 3, 1),
            row("team-b", "beta", 0, 2, 1),
            row("", "ghost", 0, 1, 0),
        ],
        "by function, no buckets: as before"
    );
    assert_eq!(
        usage(UsageFilter {
            bucket: UsageBucket::Hour,
            ..Default::default()
        })
        .await,
        [
            row("team-a", "alpha", h - HOUR, 1, 0),
            row("team-a", "alpha", h, 2, 1),
            row("team-b", "beta", h, 1, 1),
            row("", "ghost", h, 1, 0),
            row("team-b", "beta", day + DAY, 1, 0),
        ]
    );
    assert_eq!(
        usage(UsageFilter {
            group_by: UsageGroup::Namespace,
            bucket: UsageBucket::Hour,
            ..Default::default()
        })
        .await,
        [
            row("team-a", "", h - HOUR, 1, 0),
            row("", "", h, 1, 0),
            row("team-a", "", h, 2, 1),
            row("team-b", "", h, 1, 1),
            row("team-b", "", day + DAY, 1, 0),
        ]
    );
    assert_eq!(
        usage(UsageFilter {
            group_by: UsageGroup::Namespace,
            bucket: UsageBucket::Day,
            namespace: Some("team-b".into()),
            ..Default::default()
        })
        .await,
        [row("team-b", "", day, 1, 1), row("team-b", "", day + DAY, 1, 0)]
    );
    assert_eq!(
        usage(UsageFilter {
            group_by: UsageGroup::Namespace,
            ..Default::default()
        })
        .await,
        [
            row("", "", 0, 1, 0),
            row("team-a", "", 0, 3, 1),
            row("team-b", "", 0, 2, 1)
        ]
    );
    assert_eq!(
        usage(UsageFilter {
            namespace: Some("team-a".into()),
            bucket: UsageBucket::Day,
            since_ms: Some(h),
            ..Default::default()
        })
        .await,
        [row("team-a", "alpha", day, 2, 1)],
        "the window is on start time: the straddling attempt started before it"
    );
    assert_eq!(
        usage(UsageFilter {
            function: Some("beta".into()),
            bucket: UsageBucket::Hour,
            until_ms: Some(day + DAY),
            ..Default::default()
        })
        .await,
        [row("team-b", "beta", h, 1, 1)]
    );
    let gb_s = usage(UsageFilter::default()).await[0].gb_seconds();
    assert!((gb_s - 3.0 * 0.5).abs() < 1e-12, "{gb_s}");
}

/// Record an accepted event of each fate; the caller then reads
/// `invocations.ended_ms` (set by migration 0009's triggers) for them.
pub async fn mark_ended(store: &dyn Store) {
    deploy_two(store).await;
    for id in ["e-done", "e-dead", "e-open"] {
        store.record_accepted(&accepted(id, "alpha", 100)).await.unwrap();
    }
    complete(store, &completion("e-done", "alpha", 100, Status::Succeeded)).await;
    store.record_dead_letter(None, &dead("e-dead", 100)).await.unwrap();
}

/// What `mark_ended` must leave: (id, ended_ms) by id.
pub const ENDED: [(&str, Option<i64>); 3] = [("e-dead", Some(150)), ("e-done", Some(110)), ("e-open", None)];

/// Usage read from the hourly rollup plus the partial hours at a window's
/// edges equals usage summed from the attempts themselves, for any window —
/// also after a lost attempt's row is replaced by its late result (an
/// update that moves it to another hour and changes its outcome).
pub async fn usage_rollup_contract(store: &dyn Store) {
    let base = 200 * HOUR;
    // 60 attempts of "roll", 7 min apart: about 7 hours, some errors.
    let mut started = Vec::new();
    for i in 0..60i64 {
        let outcome = if i % 5 == 0 {
            AttemptOutcome::FunctionError
        } else {
            AttemptOutcome::Success
        };
        let at = base + i * 7 * 60_000 + i;
        store
            .record_attempt(&attempt(&format!("r{i}"), "roll", at, outcome))
            .await
            .unwrap();
        started.push((at, outcome != AttemptOutcome::Success));
    }
    // A lost attempt metered in hour 0, whose late result (success, started
    // in hour 8) replaces it.
    let lost = AttemptRecord {
        epoch: 7,
        error_type: Some("Stoke.WorkerLost".into()),
        ..attempt("lost", "roll", base + 10, AttemptOutcome::PlatformError)
    };
    store.record_attempt(&lost).await.unwrap();
    let late = AttemptRecord {
        epoch: 7,
        ..attempt("lost", "roll", base + 8 * HOUR + 5, AttemptOutcome::Success)
    };
    store.record_fenced(&late).await.unwrap();
    // As stored (outcome `fenced`: it counts as an error, as before).
    let stored = store.attempts("lost").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].started_ms, base + 8 * HOUR + 5);
    started.push((stored[0].started_ms, stored[0].outcome != AttemptOutcome::Success));

    let expected = |since: Option<i64>, until: Option<i64>| {
        let inside: Vec<_> = started
            .iter()
            .filter(|(at, _)| since.is_none_or(|s| *at >= s) && until.is_none_or(|u| *at < u))
            .collect();
        (
            inside.len() as u64,
            inside.iter().filter(|(_, err)| *err).count() as u64,
        )
    };
    let windows = [
        (None, None),
        (Some(base), Some(base + 3 * HOUR)),
        (Some(base + 1), Some(base + 3 * HOUR + 1)),
        (Some(base + HOUR + 17), Some(base + HOUR + 40 * 60_000)),
        (Some(base + 2 * HOUR - 1), None),
        (None, Some(base + 5 * HOUR + 60_000)),
        (Some(base + 9 * HOUR), None),
    ];
    for (since, until) in windows {
        let rows = store
            .usage(&UsageFilter {
                function: Some("roll".into()),
                since_ms: since,
                until_ms: until,
                ..Default::default()
            })
            .await
            .unwrap();
        let (attempts, errors) = expected(since, until);
        let got = rows.first().map_or((0, 0), |r| (r.attempts, r.errors));
        assert_eq!(got, (attempts, errors), "window {since:?}..{until:?}");
        if let Some(r) = rows.first() {
            assert_eq!((r.billed_ms, r.mb_ms), (attempts * 1000, attempts * 1000 * 512));
        }
        // Per hour, the buckets add up to the same.
        let hourly = store
            .usage(&UsageFilter {
                function: Some("roll".into()),
                since_ms: since,
                until_ms: until,
                bucket: UsageBucket::Hour,
                ..Default::default()
            })
            .await
            .unwrap();
        for r in &hourly {
            let (n, _) = expected(
                Some(since.unwrap_or(i64::MIN).max(r.bucket_ms)),
                Some(until.unwrap_or(i64::MAX).min(r.bucket_ms + HOUR)),
            );
            assert_eq!(r.attempts, n, "hour {} of window {since:?}..{until:?}", r.bucket_ms);
        }
        assert_eq!(hourly.iter().map(|r| r.attempts).sum::<u64>(), attempts);
    }
}
