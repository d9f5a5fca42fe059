-- Cluster-wide settings a process records once and every other checks
-- against, by name: `secrets_key_fingerprint` (the key secrets are sealed
-- with; a dispatcher with another key refuses to start). Same meaning in
-- SQLite and PostgreSQL.
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL,
    set_ms BIGINT NOT NULL
);
