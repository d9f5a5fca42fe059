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

        fn credential_from_row(r: &$row) -> Result<RegistryCredential> {
            Ok(RegistryCredential {
                host: r.try_get(0)?,
                username: r.try_get(1)?,
                password: r.try_get(2)?,
                set_ms: r.try_get(3)?,
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
                    .ok_or_else(|| StoreError::invalid(format!("unknown status {status:?}")))?,
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

            async fn put_registry_credential(&self, c: &RegistryCredential) -> Result<()> {
                sqlx::query(q::PUT_REGISTRY_CREDENTIAL)
                    .bind(&c.host)
                    .bind(&c.username)
                    .bind(&c.password)
                    .bind(c.set_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn registry_credential(&self, host: &str) -> Result<Option<RegistryCredential>> {
                let row = sqlx::query(q::REGISTRY_CREDENTIAL)
                    .bind(host)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(credential_from_row).transpose()
            }

            async fn registry_credentials(&self) -> Result<Vec<RegistryCredential>> {
                let rows = sqlx::query(q::LIST_REGISTRY_CREDENTIALS)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(credential_from_row).collect()
            }

            async fn delete_registry_credential(&self, host: &str) -> Result<bool> {
                let done = sqlx::query(q::DELETE_REGISTRY_CREDENTIAL)
                    .bind(host)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn put_package(&self, digest: &str, data: &[u8]) -> Result<()> {
                sqlx::query(q::PUT_PACKAGE)
                    .bind(digest)
                    .bind(data.len() as i64)
                    .bind(data)
                    .bind(stoke_core::now_ms())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_package(&self, digest: &str) -> Result<Option<Vec<u8>>> {
                let row = sqlx::query(q::GET_PACKAGE)
                    .bind(digest)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.try_get(0)).transpose()?)
            }

            async fn package_size(&self, digest: &str) -> Result<Option<u64>> {
                let size: Option<i64> = sqlx::query_scalar(q::PACKAGE_SIZE)
                    .bind(digest)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(size.map(|s| s as u64))
            }

            async fn deploy_version(&self, new: NewVersion<'_>) -> Result<DeployOutcome> {
                let mut tx = self.pool.begin().await?;
                let (owner, current) = lock_function(&mut tx, new.function).await?;
                if let Some(owner) = owner
                    && owner != new.namespace
                {
                    return Ok(DeployOutcome::OtherNamespace(owner));
                }
                if let Some(cur) = &current
                    && cur.digest == new.digest
                    && cur.manifest == new.manifest
                    && cur.image == new.image
                {
                    return Ok(DeployOutcome::Unchanged(current.expect("some")));
                }
                let version = FunctionVersion {
                    function: new.function.to_string(),
                    version: 0,
                    digest: new.digest.to_string(),
                    manifest: new.manifest.to_string(),
                    package_size: new.package_size,
                    created_ms: new.now_ms,
                    namespace: new.namespace.to_string(),
                    // Configuration set through the API outlives deploys.
                    config: current.map(|c| c.config).unwrap_or_default(),
                    image: new.image.to_string(),
                };
                let version = insert_next_version(&mut tx, version).await?;
                tx.commit().await?;
                Ok(DeployOutcome::Created(version))
            }

            async fn edit_config(
                &self,
                function: &str,
                edit: &stoke_core::ConfigEdit,
                now_ms: i64,
            ) -> Result<DeployOutcome> {
                let mut tx = self.pool.begin().await?;
                let (_, current) = lock_function(&mut tx, function).await?;
                let Some(current) = current else {
                    return Ok(DeployOutcome::NotDeployed);
                };
                let config = match current.config.apply(edit) {
                    Ok(c) => c,
                    Err(e) => return Ok(DeployOutcome::InvalidConfig(e)),
                };
                if config == current.config {
                    return Ok(DeployOutcome::Unchanged(current));
                }
                let version = FunctionVersion {
                    created_ms: now_ms,
                    config,
                    ..current
                };
                let version = insert_next_version(&mut tx, version).await?;
                tx.commit().await?;
                Ok(DeployOutcome::Created(version))
            }

            async fn current_version(&self, function: &str) -> Result<Option<FunctionVersion>> {
                let row = sqlx::query(q::CURRENT_VERSION)
                    .bind(function)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| version_from_row(&r)).transpose()
            }

            async fn get_version(&self, function: &str, version: u32) -> Result<Option<FunctionVersion>> {
                let row = sqlx::query(q::GET_VERSION)
                    .bind(function)
                    .bind(i64::from(version))
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| version_from_row(&r)).transpose()
            }

            async fn list_functions(&self) -> Result<Vec<FunctionVersion>> {
                let rows = sqlx::query(q::LIST_FUNCTIONS).fetch_all(&self.pool).await?;
                rows.iter().map(version_from_row).collect()
            }
        }

        #[async_trait]
        impl Tokens for $store {
            async fn create_token(&self, t: &NewToken<'_>) -> Result<()> {
                sqlx::query(q::INSERT_TOKEN)
                    .bind(t.id)
                    .bind(t.name)
                    .bind(t.namespace)
                    .bind(t.role)
                    .bind(t.hash)
                    .bind(t.now_ms)
                    .bind(t.sigv4_secret)
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

            async fn sigv4_secret(&self, id: &str) -> Result<Option<(TokenRecord, Option<String>)>> {
                let row = sqlx::query(q::TOKEN_SIGV4)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| Ok((token_from_row(&r)?, r.try_get(6)?))).transpose()
            }

            async fn tokens(&self) -> Result<Vec<TokenRecord>> {
                let rows = sqlx::query(q::LIST_TOKENS).fetch_all(&self.pool).await?;
                rows.iter().map(token_from_row).collect()
            }

            async fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool> {
                let done = sqlx::query(q::REVOKE_TOKEN)
                    .bind(id)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use sql_catalog;
