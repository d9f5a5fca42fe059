SELECT size FROM packages WHERE digest = $1
