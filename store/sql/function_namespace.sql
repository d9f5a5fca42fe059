SELECT namespace FROM functions WHERE name = $1
