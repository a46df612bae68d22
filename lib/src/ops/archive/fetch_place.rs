//! wal-fetch's view of the repository's identity, checked on every call (issue 11): the
//! repository id and system identifier every object must be bound to come from the listing
//! cache, or from `walvault.json` on a cold cache (then cached, 0600). A repository that
//! changed under the same URL (another repository id, another cluster) is noticed when an
//! object or the data directory disagrees with the cache: `walvault.json` is read once more,
//! the stale cache and prefetch spool are discarded, and the call is refused.

use std::path::Path;

use crate::ops::Repo;
use crate::ops::repo::place::Place;
use crate::ops::repo::wal_index::WalIndex;
use crate::{Error, Result};

/// The place this call checks objects against; whether it came from the cache.
pub(super) struct Known {
    pub place: Place,
    pub cached: bool,
}

/// The place from the cache, else read now (cold cache) and cached; set on `repo`.
///
/// # Errors
/// Storage failures; an unreadable identity.
pub(super) async fn known(repo: &Repo, index: &mut WalIndex) -> Result<Known> {
    if let Some(id) = index.identity().filter(|id| id.repository_id.is_some()) {
        repo.set_place(Some(id));
        let place = Place::of(Some(id), repo.layout.env(), &repo.keyring);
        return Ok(Known { place, cached: true });
    }
    let id = crate::ops::repo::identity::load(repo).await?;
    repo.set_place(id.as_ref());
    let place = Place::of(id.as_ref(), repo.layout.env(), &repo.keyring);
    if let Some(id) = id {
        index.set_identity(id);
        index.save();
    }
    Ok(Known { place, cached: false })
}

/// What reading `walvault.json` again found.
pub(super) enum Reloaded {
    /// The same place: the object really is misplaced.
    Same,
    /// The cache was only behind (e.g. the repository moved to format 2): retry with this.
    Updated,
}

/// After an object was refused as misplaced with a cached place: read the identity again.
///
/// # Errors
/// [`Error::Refused`] when the repository at this URL is now another repository or holds
/// another cluster (the cache and the spool of `spool_dir` are discarded first); storage
/// failures.
pub(super) async fn reload(
    repo: &Repo,
    index: &mut WalIndex,
    was: &Place,
    spool_dir: Option<&Path>,
) -> Result<Reloaded> {
    let id = crate::ops::repo::identity::load(repo).await?;
    let now = Place::of(id.as_ref(), repo.layout.env(), &repo.keyring);
    if now == *was {
        return Ok(Reloaded::Same);
    }
    let other_repository = was.repository.is_some() && now.repository != was.repository;
    let other_cluster = was.system_identifier != 0 && now.system_identifier != was.system_identifier;
    if other_repository || other_cluster {
        index.clear();
        index.save();
        if let Some(dir) = spool_dir {
            crate::ops::archive::spool::discard_spool(dir);
        }
        return Err(changed(repo, was, &now));
    }
    repo.set_place(id.as_ref());
    if let Some(id) = id {
        index.set_identity(id);
        index.save();
    }
    Ok(Reloaded::Updated)
}

fn changed(repo: &Repo, was: &Place, now: &Place) -> Error {
    Error::Refused(format!(
        "repository {} changed under this recovery: its cached identity is repository {} (system identifier {}), it now holds repository {} (system identifier {}); the cached listing and prefetched WAL were discarded and nothing was restored",
        repo.url,
        was.repository_hex(),
        was.system_identifier,
        now.repository_hex(),
        now.system_identifier
    ))
    .with_hint("a recovery must read one repository from start to end: point restore_command at the repository the backup came from")
}

/// The system identifier in `pgdata/global/pg_control` (its first field, in the machine's
/// byte order), when there is a readable one.
pub(super) fn pgdata_system_identifier(pgdata: &Path) -> Option<u64> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(pgdata.join("global/pg_control")).ok()?;
    f.read_exact(&mut head).ok()?;
    Some(u64::from_ne_bytes(head)).filter(|s| *s != 0)
}

/// The data directory being recovered is the cluster the repository archives. A cache that
/// says otherwise is stale (the repository at this URL changed): it and the spool are
/// discarded and `walvault.json` is read again; a repository of another cluster is refused.
///
/// # Errors
/// [`Error::Refused`] naming both system identifiers; storage failures.
pub(super) async fn check_data_directory(
    repo: &Repo,
    index: &mut WalIndex,
    known: &mut Known,
    pgdata: &Path,
    spool_dir: Option<&Path>,
) -> Result<()> {
    let Some(ours) = pgdata_system_identifier(pgdata) else { return Ok(()) };
    if known.place.system_identifier == 0 || known.place.system_identifier == ours {
        return Ok(());
    }
    if known.cached {
        tracing::warn!(
            "the cached identity of {} names system identifier {}, not this data directory's {ours}: discarding the cache and the prefetched WAL",
            repo.url,
            known.place.system_identifier
        );
        index.clear();
        if let Some(dir) = spool_dir {
            crate::ops::archive::spool::discard_spool(dir);
        }
        *known = self::known(repo, index).await?;
        if known.place.system_identifier == 0 || known.place.system_identifier == ours {
            return Ok(());
        }
    }
    Err(Error::Refused(format!(
        "data directory {} belongs to the cluster with system identifier {ours}, but environment {} of repository {} archives system identifier {}: refusing to restore another cluster's WAL into it",
        pgdata.display(),
        repo.layout.env(),
        repo.url,
        known.place.system_identifier
    )))
}
