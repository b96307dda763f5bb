"""PostgreSQL backups of the stack's database: `make backup` and `make restore FILE=...`.

A backup is a `pg_dump` custom-format archive of the application database: one consistent
snapshot (pg_dump reads in a single repeatable-read transaction, so writers keep running), small,
restorable into any PostgreSQL 15+ and checkable without restoring. Beside it a `.sha256` file in
sha256sum's format. A physical backup (pg_basebackup) would also capture the cluster's roles and
settings and allow point-in-time recovery with archived WAL, but needs a replication slot and
WAL archiving to be worth it; for a single application database the logical dump restores in
seconds and is what the tests prove (docs/operations.md, "Backups").
"""
