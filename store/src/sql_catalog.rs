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
        }
    };
}
pub(crate) use sql_catalog;
