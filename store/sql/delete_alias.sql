DELETE FROM aliases WHERE function = $1 AND name = $2
