"""The PostgreSQL engine: base backups (pg_basebackup), archived WAL (wal-push), restore to
any second (recovery_target_time), checked before it is installed."""
