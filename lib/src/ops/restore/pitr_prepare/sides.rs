//! The two sides of a restore, run at once: the archive side lists and checks the WAL archive
//! and then downloads the first segments of the recovery; the data side reads the data
//! directory (`--delta`), waits for the archive side's checks, checks the parts it will
//! download and only then changes PGDATA.

use std::path::Path;

use super::{PrepareOptions, prepare_dir, recovery_plan, restore_into, stage, target};
use crate::error::IoContext;
use crate::manifest::Manifest;
use crate::ops::Repo;
use crate::ops::repo::catalog::{BackupMetadata, ChainEnd, WalArchive};
use crate::ops::repo::local;
use crate::ops::repo::phases::Phases;
use crate::ops::repo::wal_index::WalIndex;
use crate::ops::restore::chain::{ChainRestore, Written};
use crate::ops::restore::delta;
use crate::{Error, Result};

/// What the archive side found, and the segments it staged.
pub(super) struct Archived {
    pub index: WalIndex,
    pub wal: ChainEnd,
    pub plan: Option<local::Plan>,
    pub staged: Result<Vec<String>>,
}

/// How the data side ended.
pub(super) enum Restored {
    /// Refused before anything in PGDATA was changed.
    Refused(Error),
    /// Failed while PGDATA was being changed.
    Failed(Error),
    Done(Written, Option<delta::Plan>),
}

/// The two sides of a restore, run at once.
pub(super) struct Sides<'a> {
    pub repo: &'a Repo,
    pub opts: &'a PrepareOptions,
    pub backup: &'a BackupMetadata,
    pub phases: &'a Phases,
}

impl Sides<'_> {
    /// List and check the archive (the recovery's timeline goes to `checked`), then download
    /// the first segments of the recovery into the spool.
    pub async fn archive(
        &self,
        cache: Option<&Path>,
        spool: Option<&Path>,
        checked: tokio::sync::oneshot::Sender<u32>,
    ) -> Result<Archived> {
        let (repo, opts, backup) = (self.repo, self.opts, self.backup);
        let mut index = WalIndex::load(None, repo);
        let archive = WalArchive::load(repo, &mut index, backup.wal_segment_size).await?;
        self.phases.end("wal-list");
        let wal = target::check_wal(repo, &archive, backup, &opts.target, opts.timeline).await?;
        self.phases.end("wal-check");
        let plan = match cache {
            Some(_) if opts.prefetch > 0 => Some(recovery_plan(repo, &archive, backup, &wal, &opts.pgdata).await?),
            _ => None,
        };
        // Whatever an earlier restore into this directory left is never used.
        if let Some(dir) = spool.filter(|d| d.exists()) {
            std::fs::remove_dir_all(dir).with_path(dir)?;
        }
        let _ = checked.send(wal.timeline);
        let first = backup.start_lsn.segment_number(backup.wal_segment_size);
        let staged = match (&plan, spool) {
            (Some(plan), Some(dir)) => {
                stage::stage(repo, plan, &archive.files, &local::staged_dir(dir), first, opts.prefetch).await
            }
            _ => Ok(Vec::new()),
        };
        Ok(Archived { index, wal, plan, staged })
    }

    /// Read the data directory (`--delta`), wait for the archive side's checks, check the
    /// parts to download, then change PGDATA: remove what goes, extract, write the settings.
    pub async fn data(
        &self,
        manifest: &Manifest,
        chain: Option<&ChainRestore>,
        checks_passed: tokio::sync::oneshot::Receiver<u32>,
    ) -> Restored {
        let (repo, opts, backup) = (self.repo, self.opts, self.backup);
        let survey = match opts.delta {
            true => {
                let blocks = chain.map(|c| c.target_blocks());
                let (pgdata, remap) = (&opts.pgdata, &opts.tablespace_map);
                match delta::survey_async(pgdata, manifest, blocks, remap, opts.jobs).await {
                    Ok(s) => Some(s),
                    Err(e) => return Restored::Refused(e),
                }
            }
            false => None,
        };
        // Without the timeline the archive side failed: its error is the one reported.
        let Ok(tli) = checks_passed.await else {
            return Restored::Refused(Error::Refused("the archive checks did not pass".into()));
        };
        self.phases.end("compare");
        let skip = survey.as_ref().map(|s| s.skip_parts().clone()).unwrap_or_default();
        if let Err(e) = crate::ops::repo::place::check_parts(repo, backup, |index| !skip.contains(&index)).await {
            return Restored::Refused(e);
        }
        self.phases.end("parts-check");
        tracing::info!(
            "restoring {} ({} files, {} bytes) into {}",
            backup.name,
            manifest.files.iter().filter(|e| e.kind == crate::manifest::EntryKind::File).count(),
            backup.bytes,
            opts.pgdata.display()
        );
        let changed = async {
            prepare_dir(&opts.pgdata, opts.force && !opts.delta)?;
            let delta = survey.map(delta::Survey::apply).transpose()?;
            self.phases.end("remove");
            let written = restore_into(repo, backup, manifest, opts, tli, chain, delta.as_ref()).await?;
            self.phases.end("restore");
            Ok::<_, Error>((written, delta))
        };
        match changed.await {
            Ok((written, delta)) => Restored::Done(written, delta),
            Err(e) => Restored::Failed(e),
        }
    }
}
