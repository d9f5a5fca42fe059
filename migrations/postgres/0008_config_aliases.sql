-- Function configuration and aliases (PostgreSQL). Same meaning as
-- ../sqlite/0008_config_aliases.sql.

-- Environment variables and secrets set through the admin API, as JSON
-- ({"env": {..}, "secrets": {..}}). Part of the version: changing them makes
-- a new version, so a rollback restores code and configuration together.
ALTER TABLE function_versions ADD COLUMN config TEXT NOT NULL DEFAULT '{}';

-- Named pointers to a version (`live` -> 7): callers invoke `name:alias`.
CREATE TABLE aliases (
    function    TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    PRIMARY KEY (function, name)
);
