//! The PostgreSQL side of base backup and restore. Knows nothing of storage or codecs.
//!
//! - [`backup_api`]: a session on the server (tokio-postgres): version probe, non-exclusive
//!   backup start and stop behind one function each, tablespaces, WAL switch.
//! - [`conn`]: connection settings the way `psql` finds them (`PG*` variables, `.pgpass`).
//! - [`control`]: a data directory's system identifier and whether its server runs.
//! - [`datadir`]: the walk of PGDATA and its tablespaces with PostgreSQL's exclusions.
//! - [`recovery`]: the recovery settings and `recovery.signal` for pitr-prepare. Pure text
//!   plus one writer.
//! - [`socket`]: a server reached through its socket directory (the restore test's queries).

pub mod backup_api;
pub mod conn;
pub mod control;
pub mod datadir;
pub mod recovery;
pub mod socket;
