INSERT INTO function_versions (function, version, digest, manifest, package_size, created_ms, config, image)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
