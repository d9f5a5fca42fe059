-- Credentials for OCI registries the admin API pulls images from (issue
-- 22), one per host (`registry.example.com`, `127.0.0.1:5000`): the
-- password sealed like a function secret (`sealed:v1:…`; as given when the
-- dispatcher has no secrets key). Same meaning in SQLite and PostgreSQL.
CREATE TABLE registry_credentials (
    host     TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    password TEXT NOT NULL,
    set_ms   BIGINT NOT NULL
);
