//! What `base-backup` is asked to do: shared by the copy (`base`) and the choice of a
//! reference (`incremental`).

use std::path::PathBuf;
use std::time::Duration;

use crate::ops::repo::catalog::BackupType;
use crate::pg::backup_api::ConnParams;

/// How to take the backup.
#[derive(Clone)]
pub struct BackupOptions {
    pub conn: ConnParams,
    /// The data directory to read; default: the server's `data_directory`.
    pub pgdata: Option<PathBuf>,
    /// File bytes per tar part (before compression).
    pub part_size: u64,
    /// Parts compressed and uploaded at once.
    pub jobs: usize,
    /// How long to wait for the WAL that makes the backup consistent to be archived.
    pub archive_timeout: Duration,
    /// Where parts are spooled before upload, and block digests while the backup runs (the
    /// reference's, the new map's: 16 bytes per 8 KiB block each); default: the system temp
    /// directory.
    pub spool_dir: Option<PathBuf>,
    /// Cluster name for the backup name.
    pub cluster: String,
    /// `--type`: full, or only what changed since a reference ([`super::incremental`]).
    pub backup_type: BackupType,
    /// Bytes per second read from the data directory, and uploaded (each); `None`: no limit.
    pub max_rate: Option<u64>,
    /// How far behind its primary a standby may be (`WALVAULT_STANDBY_MAX_LAG`).
    pub max_standby_lag: Duration,
    /// How long an interrupted backup may be resumed (`WALVAULT_RESUME_WINDOW`; zero: never).
    pub resume_window: Duration,
    /// The checkpoint that starts the backup: spread (the default, as `pg_basebackup`) or fast.
    pub checkpoint: Checkpoint,
    /// `--full-every`: a diff/incr is taken in full when the newest full backup is this old.
    pub full_every: Option<chrono::TimeDelta>,
}

/// How the checkpoint that starts a backup is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Checkpoint {
    /// Spread over `checkpoint_completion_target` (no I/O spike on the primary; may take minutes).
    #[default]
    Spread,
    /// Immediate: the backup starts at once, at the cost of a burst of writes.
    Fast,
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Checkpoint::Spread => "spread",
            Checkpoint::Fast => "fast",
        })
    }
}
