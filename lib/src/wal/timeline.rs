//! Timeline history files. (stub: owned by the wal worker)
