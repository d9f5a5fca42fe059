//! The one implementation of [`crate::Store`] over SQL, shared by SQLite and
//! PostgreSQL: the queries in `sql/*.sql` (loaded in `queries.rs`) are written for both (`$n`
//! placeholders, `ON CONFLICT`, `CAST(... AS BIGINT)`), so the Rust around
//! them is the same text for both databases and is instantiated once per
//! backend by [`sql_store!`]. What differs (connecting, pragmas,
//! migrations, PostgreSQL's deploy lock in `sql/postgres/`) stays in
//! `sqlite.rs` and `postgres.rs`.

/// The connection the completion writers take turns on (group commit and
/// [`crate::Store::record_batch`]): one writer at a time, queued in this
/// process instead of sleeping in SQLite's busy handler, and on SQLite its
/// page cache stays valid between writes (no other connection writes those
/// pages meanwhile). Empty until first used, and after a failed write.
pub(crate) type Writer<DB> = std::sync::Arc<tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<DB>>>>;

/// `impl Store for $store` over a `pool` field of `sqlx::Pool<$db>`, with
/// a `writer` field of [`Writer`]`<$db>`, `$row` and `$args` that
/// database's row and argument types, and
/// `deploy_lock` an optional statement (bound to the function's name) run
/// first in a deploy's transaction to serialize deploys of one function,
/// and `placeholders` how generated statements number their parameters
/// ([`crate::queries::Placeholders`]).
macro_rules! sql_store {
    ($store:ty, $db:ty, $row:ty, $args:ty, deploy_lock = $deploy_lock:expr, placeholders = $placeholders:expr) => {
        use $crate::queries::{self as q, text};

        fn version_from_row(r: &$row) -> Result<FunctionVersion> {
            Ok(FunctionVersion {
                function: r.try_get(0)?,
                version: r.try_get::<i64, _>(1)? as u32,
                digest: r.try_get(2)?,
                manifest: r.try_get(3)?,
                package_size: r.try_get::<i64, _>(4)? as u64,
                created_ms: r.try_get(5)?,
                namespace: r.try_get(6)?,
                config: stoke_core::FunctionConfig::from_json(&r.try_get::<String, _>(7)?)
                    .map_err(|e| StoreError::invalid(format!("stored function config: {e}")))?,
                image: r.try_get(8)?,
            })
        }

        /// Serialize deploys of `function` (PostgreSQL; SQLite serializes
        /// writers itself) and read its owner and current version, in `tx`.
        async fn lock_function(
            tx: &mut sqlx::Transaction<'static, $db>,
            function: &str,
        ) -> Result<(Option<String>, Option<FunctionVersion>)> {
            let lock: Option<&str> = $deploy_lock;
            if let Some(lock) = lock {
                sqlx::query(lock).bind(function).execute(&mut **tx).await?;
            }
            let owner: Option<String> = sqlx::query_scalar(q::FUNCTION_NAMESPACE)
                .bind(function)
                .fetch_optional(&mut **tx)
                .await?;
            let current = sqlx::query(q::CURRENT_VERSION)
                .bind(function)
                .fetch_optional(&mut **tx)
                .await?
                .map(|r| version_from_row(&r))
                .transpose()?;
            Ok((owner, current))
        }

        /// Record `v` as the function's next version and make it current.
        async fn insert_next_version(
            tx: &mut sqlx::Transaction<'static, $db>,
            mut v: FunctionVersion,
        ) -> Result<FunctionVersion> {
            let latest: i64 = sqlx::query_scalar(q::LATEST_VERSION_NUMBER)
                .bind(&v.function)
                .fetch_one(&mut **tx)
                .await?;
            v.version = (latest + 1) as u32;
            sqlx::query(q::INSERT_VERSION)
                .bind(&v.function)
                .bind(i64::from(v.version))
                .bind(&v.digest)
                .bind(&v.manifest)
                .bind(v.package_size as i64)
                .bind(v.created_ms)
                .bind(v.config.to_json())
                .bind(&v.image)
                .execute(&mut **tx)
                .await?;
            sqlx::query(q::SET_CURRENT_VERSION)
                .bind(&v.function)
                .bind(i64::from(v.version))
                .bind(v.created_ms)
                .bind(&v.namespace)
                .execute(&mut **tx)
                .await?;
            Ok(v)
        }

        fn completion_from_row(r: &$row) -> Result<Completion> {
            let status: String = r.try_get(4)?;
            let error_type: Option<String> = r.try_get(6)?;
            Ok(Completion {
                function: r.try_get(0)?,
                idempotency_key: r.try_get(1)?,
                invocation_id: r.try_get(2)?,
                version: r.try_get::<i64, _>(3)? as u32,
                status: Status::parse(&status)
                    .ok_or_else(|| StoreError::invalid(format!("unknown status {status:?}")))?,
                result: r.try_get(5)?,
                error: match error_type {
                    Some(error_type) => Some(ErrorRecord {
                        error_type,
                        error_message: r.try_get::<Option<String>, _>(7)?.unwrap_or_default(),
                        raw: r.try_get(8)?,
                    }),
                    None => None,
                },
                attempts: r.try_get::<i64, _>(9)? as u32,
                trigger: r.try_get(10)?,
                created_ms: r.try_get(11)?,
                completed_ms: r.try_get(12)?,
                payload_digest: r.try_get(13)?,
            })
        }

        fn dead_letter_from_row(r: &$row) -> Result<DeadLetter> {
            let reason: String = r.try_get(6)?;
            let error_type: Option<String> = r.try_get(8)?;
            Ok(DeadLetter {
                invocation_id: r.try_get(0)?,
                function: r.try_get(1)?,
                version: r.try_get::<i64, _>(2)? as u32,
                idempotency_key: r.try_get(3)?,
                trigger: r.try_get(4)?,
                payload: r.try_get(5)?,
                reason: DeadReason::parse(&reason)
                    .ok_or_else(|| StoreError::invalid(format!("unknown reason {reason:?}")))?,
                attempts: r.try_get::<i64, _>(7)? as u32,
                error: match error_type {
                    Some(error_type) => Some(ErrorRecord {
                        error_type,
                        error_message: r.try_get::<Option<String>, _>(9)?.unwrap_or_default(),
                        raw: None,
                    }),
                    None => None,
                },
                created_ms: r.try_get(10)?,
                dead_ms: r.try_get(11)?,
                redriven_ms: r.try_get(12)?,
                redrive_count: r.try_get::<i64, _>(13)? as u32,
            })
        }

        fn tick_from_row(r: &$row) -> Result<CronTick> {
            let outcome: String = r.try_get(3)?;
            Ok(CronTick {
                schedule_id: r.try_get(0)?,
                function: r.try_get(1)?,
                scheduled_ms: r.try_get(2)?,
                outcome: TickOutcome::parse(&outcome)
                    .ok_or_else(|| StoreError::invalid(format!("unknown tick outcome {outcome:?}")))?,
                invocation_id: r.try_get(4)?,
                recorded_ms: r.try_get(5)?,
            })
        }

        fn bind_attempt<'q>(
            query: sqlx::query::Query<'q, $db, $args>,
            a: &'q AttemptRecord,
        ) -> sqlx::query::Query<'q, $db, $args> {
            query
                .bind(&a.invocation_id)
                .bind(&a.function)
                .bind(i64::from(a.version))
                .bind(&a.idempotency_key)
                .bind(i64::from(a.attempt))
                .bind(a.epoch as i64)
                .bind(&a.trigger)
                .bind(&a.worker)
                .bind(a.started_ms)
                .bind(a.ended_ms)
                .bind(a.duration_us as i64)
                .bind(billed_ms(a.duration_us) as i64)
                .bind(i64::from(a.memory_mb))
                .bind(a.max_memory_used_kb as i64)
                .bind(a.cold)
                .bind(a.init_duration_us as i64)
                .bind(a.outcome.as_str())
                .bind(a.error_type.as_deref().map(text))
                .bind(a.error_message.as_deref().map(text))
        }

        fn bind_completion<'q>(
            query: sqlx::query::Query<'q, $db, $args>,
            c: &'q Completion,
        ) -> sqlx::query::Query<'q, $db, $args> {
            query
                .bind(&c.function)
                .bind(&c.idempotency_key)
                .bind(&c.invocation_id)
                .bind(i64::from(c.version))
                .bind(c.status.as_str())
                .bind(c.result.as_deref())
                .bind(c.error.as_ref().map(|e| text(&e.error_type)))
                .bind(c.error.as_ref().map(|e| text(&e.error_message)))
                .bind(c.error.as_ref().and_then(|e| e.raw.as_deref()))
                .bind(i64::from(c.attempts))
                .bind(&c.trigger)
                .bind(c.created_ms)
                .bind(c.completed_ms)
                .bind(c.payload_digest.as_deref())
        }

        /// Write completions with their attempts, in one transaction (the
        /// group commit behind [`Store::record_completion`]): each one
        /// recorded, or the duplicate already holding its key. An attempt
        /// is metered either way: it ran.
        async fn write_completions(
            conn: &mut <$db as sqlx::Database>::Connection,
            items: &[$crate::group_commit::Item],
        ) -> Result<Vec<CompletionWrite>> {
            let mut tx = sqlx::Connection::begin(conn).await?;
            let mut answers = Vec::with_capacity(items.len());
            for (attempt, c) in items.iter() {
                bind_attempt(sqlx::query(q::INSERT_ATTEMPT), attempt)
                    .execute(&mut *tx)
                    .await?;
                let inserted = bind_completion(sqlx::query(q::INSERT_COMPLETION), c)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if inserted == 1 {
                    answers.push(CompletionWrite::Recorded);
                    continue;
                }
                let by_key = sqlx::query(q::COMPLETION_BY_KEY)
                    .bind(&c.function)
                    .bind(&c.idempotency_key)
                    .fetch_optional(&mut *tx)
                    .await?;
                // Else the same invocation id under another key: that id's record.
                let existing = match by_key {
                    Some(row) => row,
                    None => {
                        sqlx::query(q::COMPLETION_BY_ID)
                            .bind(&c.invocation_id)
                            .fetch_one(&mut *tx)
                            .await?
                    }
                };
                answers.push(CompletionWrite::Duplicate(Box::new(completion_from_row(
                    &existing,
                )?)));
            }
            tx.commit().await?;
            Ok(answers)
        }

        /// Run `write` on the writers' connection (a new one from `pool`
        /// if there is none), after the writer before it; the connection is
        /// kept for the next writer unless `write` failed.
        async fn on_writer<T>(
            pool: &sqlx::Pool<$db>,
            writer: &$crate::sql_store::Writer<$db>,
            write: impl AsyncFnOnce(&mut <$db as sqlx::Database>::Connection) -> Result<T>,
        ) -> Result<T> {
            let mut slot = writer.lock().await;
            let mut conn = match slot.take() {
                Some(c) => c,
                None => pool.acquire().await?,
            };
            let written = write(&mut conn).await;
            if written.is_ok() {
                *slot = Some(conn);
            }
            written
        }

        /// The group commit writing through `pool`, on the writers'
        /// connection.
        fn group_commit(
            pool: &sqlx::Pool<$db>,
            writer: &$crate::sql_store::Writer<$db>,
        ) -> $crate::group_commit::GroupCommit {
            let (pool, writer) = (pool.clone(), writer.clone());
            $crate::group_commit::GroupCommit::new(std::sync::Arc::new(move |items| {
                let (pool, writer) = (pool.clone(), writer.clone());
                Box::pin(
                    async move { on_writer(&pool, &writer, async |conn| write_completions(conn, &items).await).await },
                )
            }))
        }

        /// A batch invocation's attempt and its items' completions, in one
        /// transaction; how many completions were new. The completions go
        /// in multi-row INSERTs: one statement for up to
        /// [`q::COMPLETIONS_PER_INSERT`] rows instead of a round trip each.
        async fn write_batch(
            conn: &mut <$db as sqlx::Database>::Connection,
            attempt: &AttemptRecord,
            completions: &[Completion],
        ) -> Result<usize> {
            let mut tx = sqlx::Connection::begin(conn).await?;
            bind_attempt(sqlx::query(q::INSERT_ATTEMPT), attempt)
                .execute(&mut *tx)
                .await?;
            let mut recorded = 0;
            for rows in completions.chunks(q::COMPLETIONS_PER_INSERT) {
                // Only placeholders are generated: no value is in the text.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(q::insert_completions(
                    rows.len(),
                    $placeholders,
                )));
                for c in rows {
                    query = bind_completion(query, c);
                }
                recorded += query.execute(&mut *tx).await?.rows_affected() as usize;
            }
            tx.commit().await?;
            Ok(recorded)
        }

        #[async_trait]
        impl Accepting for $store {
            async fn record_accepted(&self, a: &Accepted) -> Result<bool> {
                let done = sqlx::query(q::INSERT_INVOCATION)
                    .bind(&a.invocation_id)
                    .bind(&a.function)
                    .bind(&a.idempotency_key)
                    .bind(&a.trigger)
                    .bind(a.created_ms)
                    .bind(a.payload_digest.as_deref())
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn accepted(&self, id: &str) -> Result<Option<Accepted>> {
                let Some(r) = sqlx::query(q::GET_INVOCATION)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                else {
                    return Ok(None);
                };
                Ok(Some(Accepted {
                    invocation_id: r.try_get(0)?,
                    function: r.try_get(1)?,
                    idempotency_key: r.try_get(2)?,
                    trigger: r.try_get(3)?,
                    created_ms: r.try_get(4)?,
                    payload_digest: r.try_get(5)?,
                }))
            }
        }

        #[async_trait]
        impl Invocations for $store {
            async fn completion_by_key(&self, function: &str, key: &str) -> Result<Option<Completion>> {
                let row = sqlx::query(q::COMPLETION_BY_KEY)
                    .bind(function)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| completion_from_row(&r)).transpose()
            }

            async fn invocation(&self, id: &str) -> Result<Option<InvocationView>> {
                let completion = sqlx::query(q::COMPLETION_BY_ID)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| completion_from_row(&r))
                    .transpose()?;
                let accepted = sqlx::query(q::GET_INVOCATION)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                let dead = match &completion {
                    Some(_) => None,
                    None => self.dead_letter(id).await?,
                };
                // Counted after the final record was read: it is written in one
                // transaction with its attempt, so the count includes that attempt.
                let (attempts, _): (i64, i64) = sqlx::query_as(q::ATTEMPT_STATS)
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?;
                // Not ended: running once an attempt is metered or it was
                // marked running (as the listing tells it too).
                let unended = |marked: bool| {
                    if attempts > 0 || marked {
                        Status::Running
                    } else {
                        Status::Queued
                    }
                };
                let (dead, redriven) = match dead {
                    Some(d) if d.redriven_ms.is_some() => (None, Some(d)),
                    dead => (dead, None),
                };
                if let Some(d) = dead {
                    return Ok(Some(InvocationView {
                        invocation_id: d.invocation_id.clone(),
                        function: d.function.clone(),
                        idempotency_key: d.idempotency_key.clone(),
                        trigger: d.trigger.clone(),
                        created_ms: d.created_ms,
                        status: Status::DeadLettered,
                        attempts: attempts as u32,
                        completion: None,
                        dead_letter: Some(d),
                    }));
                }
                let view = match (completion, accepted, redriven) {
                    (Some(c), _, _) => InvocationView {
                        invocation_id: c.invocation_id.clone(),
                        function: c.function.clone(),
                        idempotency_key: c.idempotency_key.clone(),
                        trigger: c.trigger.clone(),
                        created_ms: c.created_ms,
                        status: c.status,
                        attempts: attempts as u32,
                        completion: Some(c),
                        dead_letter: None,
                    },
                    (None, Some(r), _) => InvocationView {
                        invocation_id: r.try_get(0)?,
                        function: r.try_get(1)?,
                        idempotency_key: r.try_get(2)?,
                        trigger: r.try_get(3)?,
                        created_ms: r.try_get(4)?,
                        status: unended(r.try_get::<Option<i64>, _>(6)?.is_some()),
                        attempts: attempts as u32,
                        completion: None,
                        dead_letter: None,
                    },
                    // Redriven, never recorded as accepted (a subject message,
                    // a synchronous call): known by its dead letter.
                    (None, None, Some(d)) => InvocationView {
                        invocation_id: d.invocation_id,
                        function: d.function,
                        idempotency_key: d.idempotency_key,
                        trigger: d.trigger,
                        created_ms: d.created_ms,
                        status: unended(false),
                        attempts: attempts as u32,
                        completion: None,
                        dead_letter: None,
                    },
                    (None, None, None) => return Ok(None),
                };
                Ok(Some(view))
            }

            async fn attempts(&self, id: &str) -> Result<Vec<AttemptRecord>> {
                let rows = sqlx::query(q::LIST_ATTEMPTS)
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let outcome: String = r.try_get(15)?;
                        Ok(AttemptRecord {
                            invocation_id: r.try_get(0)?,
                            function: r.try_get(1)?,
                            version: r.try_get::<i64, _>(2)? as u32,
                            idempotency_key: r.try_get(3)?,
                            attempt: r.try_get::<i64, _>(4)? as u32,
                            epoch: r.try_get::<i64, _>(5)? as u64,
                            trigger: r.try_get(6)?,
                            worker: r.try_get(7)?,
                            started_ms: r.try_get(8)?,
                            ended_ms: r.try_get(9)?,
                            duration_us: r.try_get::<i64, _>(10)? as u64,
                            memory_mb: r.try_get::<i64, _>(11)? as u32,
                            max_memory_used_kb: r.try_get::<i64, _>(12)? as u64,
                            cold: r.try_get(13)?,
                            init_duration_us: r.try_get::<i64, _>(14)? as u64,
                            outcome: AttemptOutcome::parse(&outcome)
                                .ok_or_else(|| StoreError::invalid(format!("unknown outcome {outcome:?}")))?,
                            error_type: r.try_get(16)?,
                            error_message: r.try_get(17)?,
                        })
                    })
                    .collect()
            }

            async fn last_attempt(&self, id: &str) -> Result<u32> {
                let (n,): (i64,) = sqlx::query_as(q::LAST_ATTEMPT)
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n as u32)
            }

            async fn dead_letters(&self, f: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
                let limit = if f.limit == 0 { 1000 } else { f.limit };
                sqlx::query(q::LIST_DEAD_LETTERS)
                    .bind(f.function.as_deref().unwrap_or(""))
                    .bind(f.since_ms.unwrap_or(0))
                    .bind(f.until_ms.unwrap_or(0))
                    .bind(f.include_redriven)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(dead_letter_from_row)
                    .collect()
            }

            async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>> {
                sqlx::query(q::GET_DEAD_LETTER)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| dead_letter_from_row(&r))
                    .transpose()
            }

            async fn claim_redrive(&self, id: &str, now_ms: i64) -> Result<bool> {
                let done = sqlx::query(q::CLAIM_REDRIVE)
                    .bind(id)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_redrive(&self, id: &str, claimed_ms: i64) -> Result<()> {
                sqlx::query(q::RELEASE_REDRIVE)
                    .bind(id)
                    .bind(claimed_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_invocations(&self, f: &InvocationFilter) -> Result<InvocationPage> {
                let limit = if f.limit == 0 { 50 } else { f.limit } as usize;
                let status = f.status.map(Status::as_str);
                // The lower of the cursor and (until, ''): rows before it.
                let until = (f.until_ms.unwrap_or(i64::MAX), "");
                let (before_ms, before_id) = match &f.after {
                    Some(c) => until.min((c.created_ms, c.invocation_id.as_str())),
                    None => until,
                };
                let (sql, function) = match f.function.as_deref() {
                    Some(function) => (q::LIST_INVOCATIONS_OF_FUNCTION, function),
                    None => (q::LIST_INVOCATIONS, ""),
                };
                // Not a cached prepared statement: PostgreSQL would switch to
                // a generic plan after five runs, blind to which of the
                // `$n = '' OR ...` filters are off, and scan whole tables.
                // Planned with its values each time, each branch walks its
                // index. One row more than asked: whether there is a next page.
                let mut invocations = sqlx::query(sql)
                    .persistent(false)
                    .bind(function)
                    .bind(f.namespace.as_deref().unwrap_or(""))
                    .bind(status.unwrap_or(""))
                    .bind(f.since_ms.unwrap_or(0))
                    .bind(f.idempotency_key.as_deref().unwrap_or(""))
                    .bind(before_id)
                    .bind(before_ms)
                    .bind(limit as i64 + 1)
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(summary_from_row)
                    .collect::<Result<Vec<_>>>()?;
                let next = (invocations.len() > limit).then(|| {
                    invocations.truncate(limit);
                    let last = &invocations[limit - 1];
                    InvocationCursor {
                        created_ms: last.created_ms,
                        invocation_id: last.invocation_id.clone(),
                    }
                });
                Ok(InvocationPage { invocations, next })
            }
        }

        #[async_trait]
        impl Delivery for $store {
            async fn mark_running(&self, id: &str, at_ms: i64) -> Result<()> {
                // On the writers' connection, queued behind the group commit
                // rather than in SQLite's busy handler.
                on_writer(&self.pool, &self.writer, async |conn| {
                    sqlx::query(q::MARK_RUNNING)
                        .bind(id)
                        .bind(at_ms)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
                .await
            }

            async fn record_attempt(&self, attempt: &AttemptRecord) -> Result<()> {
                // With its invocation marked running (tried, not ended), on
                // the writers' connection like every other write of attempts.
                on_writer(&self.pool, &self.writer, async |conn| {
                    let mut tx = sqlx::Connection::begin(conn).await?;
                    bind_attempt(sqlx::query(q::INSERT_ATTEMPT), attempt)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(q::MARK_RUNNING)
                        .bind(&attempt.invocation_id)
                        .bind(attempt.started_ms)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await
            }

            async fn record_completion(&self, attempt: &AttemptRecord, c: &Completion) -> Result<CompletionWrite> {
                self.commits.submit((attempt.clone(), c.clone())).await
            }

            async fn record_batch(&self, attempt: &AttemptRecord, completions: &[Completion]) -> Result<usize> {
                on_writer(&self.pool, &self.writer, async |conn| {
                    write_batch(conn, attempt, completions).await
                })
                .await
            }

            async fn record_fenced(&self, a: &AttemptRecord) -> Result<()> {
                let mut tx = self.pool.begin().await?;
                let replaced = sqlx::query(q::FENCE_ATTEMPT)
                    .bind(&a.invocation_id)
                    .bind(a.epoch as i64)
                    .bind(&a.worker)
                    .bind(a.started_ms)
                    .bind(a.ended_ms)
                    .bind(a.duration_us as i64)
                    .bind(billed_ms(a.duration_us) as i64)
                    .bind(a.max_memory_used_kb as i64)
                    .bind(a.cold)
                    .bind(a.init_duration_us as i64)
                    .bind(AttemptOutcome::Fenced.as_str())
                    .bind(a.error_type.as_deref().map(text))
                    .bind(a.error_message.as_deref().map(text))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if replaced == 0 {
                    let (recorded,): (i64,) = sqlx::query_as(q::EPOCH_RECORDED)
                        .bind(&a.invocation_id)
                        .bind(a.epoch as i64)
                        .fetch_one(&mut *tx)
                        .await?;
                    if recorded == 0 {
                        let fenced = AttemptRecord {
                            outcome: AttemptOutcome::Fenced,
                            ..a.clone()
                        };
                        // An upsert, not DO NOTHING: if the dispatcher's
                        // `Stoke.WorkerLost` row for this epoch lands between
                        // the UPDATE above and here (PostgreSQL runs them
                        // concurrently), it is still replaced.
                        bind_attempt(sqlx::query(q::INSERT_FENCED), &fenced)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn record_dead_letter(&self, attempt: Option<&AttemptRecord>, d: &DeadLetter) -> Result<()> {
                let mut tx = self.pool.begin().await?;
                if let Some(a) = attempt {
                    bind_attempt(sqlx::query(q::INSERT_ATTEMPT), a)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(q::UPSERT_DEAD_LETTER)
                    .bind(&d.invocation_id)
                    .bind(&d.function)
                    .bind(i64::from(d.version))
                    .bind(&d.idempotency_key)
                    .bind(&d.trigger)
                    .bind(&d.payload)
                    .bind(d.reason.as_str())
                    .bind(i64::from(d.attempts))
                    .bind(d.error.as_ref().map(|e| text(&e.error_type)))
                    .bind(d.error.as_ref().map(|e| text(&e.error_message)))
                    .bind(d.created_ms)
                    .bind(d.dead_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        }

        #[async_trait]
        impl Schedules for $store {
            async fn claim_tick(&self, t: &CronTick) -> Result<Option<CronTick>> {
                let done = sqlx::query(q::CLAIM_TICK)
                    .bind(&t.schedule_id)
                    .bind(&t.function)
                    .bind(t.scheduled_ms)
                    .bind(t.outcome.as_str())
                    .bind(t.invocation_id.as_deref())
                    .bind(t.recorded_ms)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 1 {
                    return Ok(None);
                }
                let row = sqlx::query(q::GET_TICK)
                    .bind(&t.schedule_id)
                    .bind(t.scheduled_ms)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(Some(tick_from_row(&row)?))
            }

            async fn last_tick(&self, schedule_id: &str, fired_only: bool) -> Result<Option<CronTick>> {
                sqlx::query(q::LAST_TICK)
                    .bind(schedule_id)
                    .bind(fired_only)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| tick_from_row(&r))
                    .transpose()
            }

            async fn cron_ticks(&self, function: Option<&str>, limit: u32) -> Result<Vec<CronTick>> {
                let limit = if limit == 0 { 100 } else { limit };
                sqlx::query(q::LIST_TICKS)
                    .bind(function.unwrap_or(""))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(tick_from_row)
                    .collect()
            }

            async fn create_schedule(&self, s: &ScheduleDef) -> Result<bool> {
                let done = sqlx::query(q::INSERT_SCHEDULE)
                    .bind(&s.name)
                    .bind(&s.function)
                    .bind(&s.cron)
                    .bind(&s.timezone)
                    .bind(&s.overlap)
                    .bind(&s.catch_up)
                    .bind(i64::from(s.catch_up_window_secs))
                    .bind(s.payload.as_deref())
                    .bind(s.paused)
                    .bind(s.created_ms)
                    .bind(s.updated_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn schedules(&self) -> Result<Vec<ScheduleDef>> {
                let rows = sqlx::query(q::LIST_SCHEDULES).fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|r| {
                        Ok(ScheduleDef {
                            name: r.try_get(0)?,
                            function: r.try_get(1)?,
                            cron: r.try_get(2)?,
                            timezone: r.try_get(3)?,
                            overlap: r.try_get(4)?,
                            catch_up: r.try_get(5)?,
                            catch_up_window_secs: r.try_get::<i64, _>(6)? as u32,
                            payload: r.try_get(7)?,
                            paused: r.try_get(8)?,
                            created_ms: r.try_get(9)?,
                            updated_ms: r.try_get(10)?,
                        })
                    })
                    .collect()
            }

            async fn set_schedule_paused(&self, name: &str, paused: bool, now_ms: i64) -> Result<bool> {
                let done = sqlx::query(q::PAUSE_SCHEDULE)
                    .bind(name)
                    .bind(paused)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_schedule(&self, name: &str) -> Result<bool> {
                let done = sqlx::query(q::DELETE_SCHEDULE)
                    .bind(name)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }
        }

        #[async_trait]
        impl Usage for $store {
            async fn usage(&self, f: &UsageFilter) -> Result<Vec<UsageRow>> {
                // Planned with its values (see list_invocations).
                let (hours_from, hours_to) = q::whole_hours(f.since_ms, f.until_ms);
                let rows = sqlx::query(q::USAGE)
                    .persistent(false)
                    .bind(f.function.as_deref().unwrap_or(""))
                    .bind(f.since_ms.unwrap_or(i64::MIN))
                    .bind(f.until_ms.unwrap_or(i64::MAX))
                    .bind(f.namespace.as_deref().unwrap_or(""))
                    .bind(f.group_by == UsageGroup::Namespace)
                    .bind(f.bucket.len_ms())
                    .bind(hours_from)
                    .bind(hours_to)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(UsageRow {
                            namespace: r.try_get(0)?,
                            function: r.try_get(1)?,
                            bucket_ms: r.try_get(2)?,
                            attempts: r.try_get::<i64, _>(3)? as u64,
                            errors: r.try_get::<i64, _>(4)? as u64,
                            cold_starts: r.try_get::<i64, _>(5)? as u64,
                            billed_ms: r.try_get::<i64, _>(6)? as u64,
                            mb_ms: r.try_get::<i64, _>(7)? as u64,
                        })
                    })
                    .collect()
            }
        }
    };
}
pub(crate) use sql_store;
