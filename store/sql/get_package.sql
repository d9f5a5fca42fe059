SELECT data FROM packages WHERE digest = $1
