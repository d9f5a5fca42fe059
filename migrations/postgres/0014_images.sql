-- The image a version runs (issue 22): the sha256 hex of its ImageSpec
-- blob, stored as a package blob; empty for a plain package.
ALTER TABLE function_versions ADD COLUMN image TEXT NOT NULL DEFAULT '';
