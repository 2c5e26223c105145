"""ClickHouse: the raw-event archive, embedded (chdb) or on a server, through clickhouse-connect."""
