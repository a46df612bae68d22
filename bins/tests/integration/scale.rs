//! Backups a large primary can live with (issue 14): the starting checkpoint, progress lines,
//! a rate limit, a backup from a standby, multipart uploads and resumed backups.

mod checkpoint;
mod multipart;
mod rate;
mod resume;
mod standby_backup;
