//! [`crate::Catalog`] over SQL for both backends, like `sql_store.rs`:
//! instantiated by [`sql_catalog!`] next to [`crate::sql_store::sql_store!`]
//! (it reuses that macro's `version_from_row`).

/// `impl Catalog for $store` over a `pool` field, with `$row` the database's
/// row type.
macro_rules! sql_catalog {
    ($store:ty, $row:ty) => {
        fn token_from_row(r: &$row) -> Result<TokenRecord> {
            Ok(TokenRecord {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                namespace: r.try_get(2)?,
                role: r.try_get(3)?,
                created_ms: r.try_get(4)?,
                revoked_ms: r.try_get(5)?,
            })
        }

        fn summary_from_row(r: &$row) -> Result<InvocationSummary> {
            let status: String = r.try_get(3)?;
            let error_type: Option<String> = r.try_get(9)?;
            let recorded = r.try_get::<i64, _>(4)?;
            let attempt_rows = r.try_get::<i64, _>(11)?;
            let version = match r.try_get::<i64, _>(2)? {
                0 => r.try_get::<i64, _>(12)?,
                v => v,
            };
            Ok(InvocationSummary {
                invocation_id: r.try_get(0)?,
                function: r.try_get(1)?,
                namespace: r.try_get(13)?,
                version: version as u32,
                status: Status::parse(&status)
                    .ok_or_else(|| StoreError::Invalid(format!("unknown status {status:?}")))?,
                // As GetInvocation counts: a late (fenced) result adds a row.
                attempts: recorded.max(attempt_rows) as u32,
                idempotency_key: r.try_get(5)?,
                trigger: r.try_get(6)?,
                created_ms: r.try_get(7)?,
                completed_ms: r.try_get(8)?,
                error: match error_type {
                    Some(error_type) => Some(ErrorRecord {
                        error_type,
                        error_message: r.try_get::<Option<String>, _>(10)?.unwrap_or_default(),
                        raw: None,
                    }),
                    None => None,
                },
            })
        }

        #[async_trait]
        impl Catalog for $store {
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

            async fn function_namespace(&self, function: &str) -> Result<Option<String>> {
                Ok(sqlx::query_scalar(q::FUNCTION_NAMESPACE)
                    .bind(function)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn list_versions(&self, function: &str) -> Result<Vec<FunctionVersion>> {
                let rows = sqlx::query(q::LIST_VERSIONS)
                    .bind(function)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(version_from_row).collect()
            }

            async fn set_current_version(&self, function: &str, version: u32, now_ms: i64) -> Result<bool> {
                let done = sqlx::query(q::ROLLBACK_VERSION)
                    .bind(function)
                    .bind(i64::from(version))
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_function(&self, function: &str, now_ms: i64) -> Result<bool> {
                let done = sqlx::query(q::DELETE_FUNCTION)
                    .bind(function)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn create_token(&self, t: &NewToken<'_>) -> Result<()> {
                sqlx::query(q::INSERT_TOKEN)
                    .bind(t.id)
                    .bind(t.name)
                    .bind(t.namespace)
                    .bind(t.role)
                    .bind(t.hash)
                    .bind(t.now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
                let row = sqlx::query(q::TOKEN_BY_HASH)
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| token_from_row(&r)).transpose()
            }

            async fn tokens(&self) -> Result<Vec<TokenRecord>> {
                let rows = sqlx::query(q::LIST_TOKENS).fetch_all(&self.pool).await?;
                rows.iter().map(token_from_row).collect()
            }

            async fn set_alias(&self, function: &str, alias: &str, version: u32, now_ms: i64) -> Result<bool> {
                let done = sqlx::query(q::SET_ALIAS)
                    .bind(function)
                    .bind(alias)
                    .bind(i64::from(version))
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn aliases(&self, function: &str) -> Result<Vec<Alias>> {
                let rows = sqlx::query(q::LIST_ALIASES)
                    .bind(function)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(Alias {
                            function: r.try_get(0)?,
                            name: r.try_get(1)?,
                            version: r.try_get::<i64, _>(2)? as u32,
                            updated_ms: r.try_get(3)?,
                        })
                    })
                    .collect()
            }

            async fn delete_alias(&self, function: &str, alias: &str) -> Result<bool> {
                let done = sqlx::query(q::DELETE_ALIAS)
                    .bind(function)
                    .bind(alias)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool> {
                let done = sqlx::query(q::REVOKE_TOKEN)
                    .bind(id)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn setting(&self, name: &str) -> Result<Option<String>> {
                Ok(sqlx::query_scalar(q::GET_SETTING)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn claim_setting(&self, name: &str, value: &str, now_ms: i64) -> Result<String> {
                sqlx::query(q::CLAIM_SETTING)
                    .bind(name)
                    .bind(value)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(sqlx::query_scalar(q::GET_SETTING)
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn replace_setting(&self, name: &str, value: &str, now_ms: i64) -> Result<()> {
                sqlx::query(q::REPLACE_SETTING)
                    .bind(name)
                    .bind(value)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}
pub(crate) use sql_catalog;
