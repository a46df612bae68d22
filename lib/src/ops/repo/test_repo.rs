//! For unit tests: a repository in a temporary local directory (encrypted, identity of
//! cluster 7 created), handed to an async test on a current-thread runtime.

use super::Repo;
use super::identity::{self, ClusterInfo};
use crate::config::{Config, Overrides, RawSettings};

/// Run `test` against a fresh repository.
pub fn with_repo(test: impl AsyncFnOnce(&Repo)) {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("file://{}", tmp.path().join("repo").display());
    let env = |k: &str| match k {
        "WALVAULT_REPO" => Some(url.clone()),
        "BACKUP_ENCRYPTION_KEY" => Some("ab".repeat(32)),
        _ => None,
    };
    let raw = RawSettings::load_from(None, &Overrides::new(), env).unwrap_or_else(|e| panic!("{e}"));
    let config = Config::from_raw(&raw).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(tmp.path().join("repo")).unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let repo = Repo::open(&config).await.unwrap_or_else(|e| panic!("{e}"));
        let cluster = ClusterInfo { system_identifier: 7, pg_major: Some(17), wal_segment_size: 16 << 20 };
        identity::ensure(&repo, &cluster).await.unwrap_or_else(|e| panic!("{e}"));
        test(&repo).await;
    });
}
