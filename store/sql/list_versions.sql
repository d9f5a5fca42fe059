SELECT v.function, v.version, v.digest, v.manifest, v.package_size, v.created_ms, f.namespace, v.config, v.image
FROM function_versions v JOIN functions f ON f.name = v.function
WHERE v.function = $1
ORDER BY v.version
