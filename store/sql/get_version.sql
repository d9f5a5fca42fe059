SELECT function, version, digest, manifest, package_size, created_ms
FROM function_versions WHERE function = $1 AND version = $2
