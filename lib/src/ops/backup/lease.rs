//! Who writes a resumable backup's folder: a lease object (`<backup>/lease.json`), written when
//! the run starts and renewed every [`RENEW_EVERY`] while it runs.
//!
//! A later run resumes a leftover only once nothing in its folder was written for
//! [`super::resume::LIVE_FOR`] (the lease is renewed well inside that), so a run still copying
//! a huge part is not mistaken for a dead one. A run that was cut off from storage for longer
//! and comes back finds the lease naming another run: it stops at its next renewal, and in any
//! case before it writes the backup's metadata (the one object that makes a backup complete),
//! so two runs never both complete one folder.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::ops::Repo;
use crate::ops::repo::blocking;
use crate::ops::repo::place::Logical;
use crate::{Error, Result};

/// How often a running backup renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(120);

/// The lease's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseBody {
    /// A random id of the run (hex).
    pub run: String,
    pub host: String,
    pub pid: u32,
    /// When it was last renewed (RFC 3339).
    pub renewed_at: chrono::DateTime<chrono::Utc>,
}

/// This run's hold on the folder of `backup`.
#[derive(Debug)]
pub struct Lease {
    backup: String,
    key: String,
    body: LeaseBody,
}

impl Lease {
    /// Write the lease of `backup` naming this run (taking it over from a run that is gone).
    ///
    /// # Errors
    /// Storage and codec failures.
    pub async fn take(repo: &Repo, backup: &str) -> Result<Lease> {
        let mut run = [0u8; 16];
        SystemRandom::new().fill(&mut run).map_err(|_| Error::Internal("no random bytes for the lease".into()))?;
        let body = LeaseBody {
            run: hex::encode(run),
            host: super::resume::hostname(),
            pid: std::process::id(),
            renewed_at: chrono::Utc::now(),
        };
        let lease = Lease { backup: backup.to_string(), key: key(repo, backup), body };
        lease.write(repo).await?;
        Ok(lease)
    }

    /// Run `work` while renewing the lease; `work` is stopped (dropped) with
    /// [`Error::Refused`] as soon as the lease names another run.
    ///
    /// # Errors
    /// `work`'s errors, or the takeover.
    pub async fn hold<T>(&mut self, repo: &Repo, work: impl Future<Output = Result<T>>) -> Result<T> {
        let renew = async {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                if let Err(e) = self.renew(repo).await {
                    return e;
                }
            }
        };
        tokio::pin!(work);
        tokio::pin!(renew);
        tokio::select! {
            r = &mut work => r,
            e = &mut renew => Err(e),
        }
    }

    /// The lease still names this run (read back from storage): call it right before the
    /// object that completes the backup is written.
    ///
    /// # Errors
    /// [`Error::Refused`] when another run took the folder over; storage and codec failures.
    pub async fn confirm(&self, repo: &Repo) -> Result<()> {
        let found = self.read(repo).await?;
        self.check(&found)
    }

    async fn renew(&mut self, repo: &Repo) -> Result<()> {
        match self.read(repo).await {
            Ok(found) => self.check(&found)?,
            // A storage hiccup is not a takeover: the next renewal (or confirm) decides.
            Err(e) => {
                tracing::warn!("backup {}: could not read its lease, renewing it anyway: {e}", self.backup);
            }
        }
        self.body.renewed_at = chrono::Utc::now();
        if let Err(e) = self.write(repo).await {
            tracing::warn!("backup {}: could not renew its lease: {e}", self.backup);
        }
        Ok(())
    }

    fn check(&self, found: &LeaseBody) -> Result<()> {
        if found.run == self.body.run {
            return Ok(());
        }
        Err(Error::Refused(format!(
            "backup {} was taken over by another base-backup run (host {}, pid {}) while this run (pid {}) could not write to the repository for {} s or more: this run stops, the other one completes the backup",
            self.backup,
            found.host,
            found.pid,
            self.body.pid,
            super::resume::LIVE_FOR.as_secs()
        )))
    }

    async fn read(&self, repo: &Repo) -> Result<LeaseBody> {
        let json = repo.read_object(&self.key, &Logical::Lease(&self.backup), false).await?;
        serde_json::from_slice(&json).map_err(|e| Error::corrupt(repo.storage.describe(&self.key), e))
    }

    async fn write(&self, repo: &Repo) -> Result<()> {
        let json = serde_json::to_vec(&self.body).map_err(|e| Error::Invalid(format!("lease: {e}")))?;
        let (settings, write_key) = (repo.codec, repo.keyring.write_key().cloned());
        let context = repo.context(&Logical::Lease(&self.backup)).await?;
        let encoded =
            blocking(move || codec::encode_to_vec(&json, &settings, write_key.as_ref(), None, &context)).await?;
        repo.storage.put(&self.key, Bytes::from(encoded)).await
    }
}

fn key(repo: &Repo, backup: &str) -> String {
    repo.layout.backup_object(backup, &format!("lease.json{}", repo.object_ext()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::repo::test_repo::with_repo;

    #[test]
    fn a_run_whose_lease_was_taken_over_stops_and_the_new_one_goes_on() {
        with_repo(async |repo| {
            let backup = "pg_production_20261203_101500";
            let mut old = Lease::take(repo, backup).await.unwrap_or_else(|e| panic!("{e}"));
            old.confirm(repo).await.unwrap_or_else(|e| panic!("its own lease: {e}"));
            old.renew(repo).await.unwrap_or_else(|e| panic!("renewing its own lease: {e}"));
            // A resumed run takes the folder over (the old one was silent past LIVE_FOR).
            let new = Lease::take(repo, backup).await.unwrap_or_else(|e| panic!("{e}"));
            let e = old.confirm(repo).await.expect_err("the old run must not complete the backup");
            assert!(matches!(e, Error::Refused(_)) && e.to_string().contains("taken over"), "{e}");
            assert!(old.renew(repo).await.is_err(), "nor renew the lease it lost");
            new.confirm(repo).await.unwrap_or_else(|e| panic!("the new run goes on: {e}"));
        });
    }

    #[test]
    fn hold_runs_the_work_and_a_forged_lease_is_refused() {
        with_repo(async |repo| {
            let backup = "pg_production_20261203_101501";
            let mut lease = Lease::take(repo, backup).await.unwrap_or_else(|e| panic!("{e}"));
            let v = lease.hold(repo, async { Ok(41 + 1) }).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(v, 42);
            // The same bytes under another backup's name: bound to its place, refused.
            let other = "pg_production_20261203_101502";
            let bytes = repo.storage.get_bytes(&key(repo, backup)).await.unwrap_or_else(|e| panic!("{e}"));
            repo.storage.put(&key(repo, other), bytes).await.unwrap_or_else(|e| panic!("{e}"));
            let copied = Lease { backup: other.into(), key: key(repo, other), body: lease.body.clone() };
            assert!(copied.confirm(repo).await.is_err(), "a lease copied from another folder is refused");
        });
    }
}
