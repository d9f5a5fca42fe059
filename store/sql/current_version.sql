SELECT v.function, v.version, v.digest, v.manifest, v.package_size, v.created_ms, f.namespace, v.config, v.image
FROM functions f JOIN function_versions v ON v.function = f.name AND v.version = f.current_version
WHERE f.name = $1
