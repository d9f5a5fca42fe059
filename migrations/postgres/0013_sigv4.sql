-- The AWS secret access key of each token (SigV4 on the Invoke API); none
-- for tokens made before.
ALTER TABLE tokens ADD COLUMN sigv4_secret TEXT;
