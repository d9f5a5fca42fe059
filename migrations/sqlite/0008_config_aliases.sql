-- Function configuration and aliases (SQLite). Same meaning as
-- ../postgres/0008_config_aliases.sql.

-- Environment variables and secrets set through the admin API, as JSON
-- ({"env": {..}, "secrets": {..}}). Part of the version: changing them makes
-- a new version, so a rollback restores code and configuration together.
ALTER TABLE function_versions ADD COLUMN config TEXT NOT NULL DEFAULT '{}';

-- Named pointers to a version (`live` -> 7): callers invoke `name:alias`.
CREATE TABLE aliases (
    function    TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (function, name)
);
