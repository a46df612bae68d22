//! Where this repository's objects belong (`docs/FORMAT.md`, sections 1.1 and 6): the
//! repository id and the environment's cluster from `walvault.json`, the logical name of each
//! object, and which format-1 objects (bound to no place) may still be read.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::codec::{Context, Expect, Keyring};
use crate::ops::repo::identity::Identity;
use crate::wal::WalFileName;
use crate::{Error, Result};

/// Part headers read at once by [`check_parts`].
const PARTS_AT_ONCE: usize = 16;

/// What an object is, independent of where it is stored: what it is bound to.
#[derive(Debug, Clone, Copy)]
pub enum Logical<'a> {
    /// A WAL file: segment, `.partial`, `.history` or `.backup` file, by its PostgreSQL name.
    Wal(&'a str),
    /// Part `index` of base backup `backup`.
    Part { backup: &'a str, index: u32 },
    /// The manifest of base backup `backup`.
    Manifest(&'a str),
    /// The block map of base backup `backup` (`blockmap.bin`).
    BlockMap(&'a str),
    /// The record of part `index` of base backup `backup` (what a resumed backup may reuse).
    PartRecord { backup: &'a str, index: u32 },
    /// The lease of the base-backup run writing backup `backup` (`lease.json`): who writes
    /// the folder, renewed while it runs (a resumed run takes it over).
    Lease(&'a str),
    /// Object `file` (`archive.tar`, `manifest.json`) of file-storage backup `backup`.
    Files { kind: &'a str, backup: &'a str, file: &'a str },
}

impl Logical<'_> {
    /// The name stored in the binding context.
    pub fn name(&self) -> String {
        match self {
            Logical::Wal(name) => format!("wal/{name}"),
            Logical::Part { backup, index } => format!("backup/{backup}/part/{index}"),
            Logical::Manifest(backup) => format!("backup/{backup}/manifest"),
            Logical::BlockMap(backup) => format!("backup/{backup}/blockmap"),
            Logical::PartRecord { backup, index } => format!("backup/{backup}/part/{index}/record"),
            Logical::Lease(backup) => format!("backup/{backup}/lease"),
            Logical::Files { kind, backup, file } => format!("files/{kind}/{backup}/{file}"),
        }
    }

    /// File-storage backups belong to no PostgreSQL cluster (system identifier 0).
    fn on_cluster(&self) -> bool {
        !matches!(self, Logical::Files { .. })
    }

    /// The backup's start time, from its name (`..._YYYYMMDD_HHMMSS`).
    fn backup_time(&self) -> Option<DateTime<Utc>> {
        let name = match self {
            Logical::Part { backup, .. }
            | Logical::Manifest(backup)
            | Logical::BlockMap(backup)
            | Logical::PartRecord { backup, .. }
            | Logical::Lease(backup)
            | Logical::Files { backup, .. } => backup,
            Logical::Wal(_) => return None,
        };
        let stamp = name.get(name.len().checked_sub(15)?..)?;
        NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S").ok().map(|t| t.and_utc())
    }
}

/// Which format-1 objects a repository still reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Format1 {
    /// A format-1 repository (no repository id yet): all of them.
    All,
    /// A repository created in format 2: none.
    None,
    /// A repository moved to format 2 at `until`; WAL only before `wal_before` (the first
    /// segment this environment archived in format 2), when there is one.
    Before { until: DateTime<Utc>, wal_before: Option<String> },
    /// Marks whose seal does not open with a configured key: none (they were edited).
    Unsealed,
}

/// One environment of one repository: what its objects are bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The repository id; `None` for a format-1 repository no format-2 writer has touched.
    pub repository: Option<[u8; 16]>,
    pub env: String,
    /// The environment's cluster; 0 while it has none.
    pub system_identifier: u64,
    format1: Format1,
}

impl Place {
    /// The place of environment `env` in the repository whose identity is `id` (`None`: a
    /// repository without `walvault.json`, which can only hold format-1 objects). In an
    /// encrypted repository the format-1 marks count only when sealed by a key of `keyring`.
    pub fn of(id: Option<&Identity>, env: &str, keyring: &Keyring) -> Place {
        let repository = id.and_then(|id| id.repository_id.as_deref()).and_then(super::identity::parse_repository_id);
        let system_identifier = id.and_then(|id| id.envs.get(env)).map_or(0, |e| e.system_identifier.0);
        let encrypted = id.is_some_and(|id| id.encrypted);
        let format1 = match (repository, id.and_then(|id| id.format1.as_ref())) {
            (None, _) => Format1::All,
            (Some(_), None) => Format1::None,
            (Some(r), Some(f)) if encrypted && !f.sealed(r, keyring) => Format1::Unsealed,
            (Some(_), Some(f)) => Format1::Before { until: f.until, wal_before: f.wal_before.get(env).cloned() },
        };
        Place { repository, env: env.to_string(), system_identifier, format1 }
    }

    /// The repository id in hex, or a placeholder for a format-1 repository.
    pub fn repository_hex(&self) -> String {
        self.repository.map_or_else(|| "(none: a format-1 repository)".to_string(), hex::encode)
    }

    /// True while this environment has written no WAL segment in format 2 in a repository
    /// that holds format-1 objects: the first one must be recorded (see `identity`).
    pub fn first_format2_wal_pending(&self) -> bool {
        matches!(self.format1, Format1::Before { wal_before: None, .. })
    }

    /// The context a writer binds `what` to.
    ///
    /// # Errors
    /// [`Error::Refused`] in a repository without an id (writers create it first).
    pub fn context(&self, what: &Logical) -> Result<Context> {
        let repository = self.repository.ok_or_else(|| {
            Error::Refused(format!(
                "cannot write {}: the repository has no repository id in walvault.json",
                what.name()
            ))
        })?;
        Ok(self.context_in(repository, what))
    }

    fn context_in(&self, repository: [u8; 16], what: &Logical) -> Context {
        Context {
            repository,
            env: self.env.clone(),
            system_identifier: if what.on_cluster() { self.system_identifier } else { 0 },
            object: what.name(),
        }
    }

    /// What a reader of `what` demands.
    pub fn expect(&self, what: &Logical) -> Expect {
        let context = self.context_in(self.repository.unwrap_or_default(), what);
        // History and backup-label files carry no system identifier: one archived before the
        // environment's first segment is bound to system identifier 0.
        let cluster_optional = matches!(what, Logical::Wal(name) if !is_segment(name));
        Expect { context, cluster_optional, format1: self.format1_rule(what) }
    }

    /// Whether a format-1 object may stand for `what` here, and why not.
    fn format1_rule(&self, what: &Logical) -> std::result::Result<(), String> {
        let (until, wal_before) = match &self.format1 {
            Format1::All => return Ok(()),
            Format1::None => {
                return Err(format!(
                    "repository {} was created in format 2, where every object is bound to its place",
                    self.repository_hex()
                ));
            }
            Format1::Unsealed => {
                return Err(
                    "walvault.json's format1 marks are not sealed by a configured key of this repository (edited?)"
                        .to_string(),
                );
            }
            Format1::Before { until, wal_before } => (until, wal_before),
        };
        if let Logical::Wal(name) = what {
            let Some(first) = wal_before else { return Ok(()) };
            return if wal_before_mark(name, first) {
                Ok(())
            } else {
                Err(format!("environment {} archives in format 2 since {first}, which precedes {name}", self.env))
            };
        }
        match what.backup_time() {
            Some(t) if t < *until => Ok(()),
            _ => Err(format!(
                "the repository moved to format 2 at {}, and this backup was not started before then",
                until.format("%Y-%m-%d %H:%M:%S UTC")
            )),
        }
    }
}

/// Every `wanted` part of backup `b` must be bound to its place (this backup, its index): read
/// each part's header (one ranged read each, 16 at once) before anything is written into a data
/// directory, so a part swapped in from another backup, environment or repository is refused
/// up front.
///
/// # Errors
/// [`Error::Misplaced`] naming the part; storage and corruption errors.
pub async fn check_parts(
    repo: &crate::ops::Repo,
    b: &super::metadata::BackupMetadata,
    wanted: impl Fn(u32) -> bool,
) -> Result<()> {
    use futures_util::{StreamExt, TryStreamExt};
    futures_util::stream::iter(b.parts.iter().filter(|p| wanted(p.index)))
        .map(|part| async move {
            let expect = repo.expect(&Logical::Part { backup: &b.name, index: part.index }).await?;
            let object = repo.storage.describe(&part.key);
            let head = repo.storage.get_prefix(&part.key, crate::codec::MAX_HEADER_LEN as u64).await?;
            let header = crate::codec::read_header(&mut head.as_ref(), &object)?;
            crate::codec::check_place(&header, Some(&expect), &object)
        })
        .buffer_unordered(PARTS_AT_ONCE)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn is_segment(name: &str) -> bool {
    WalFileName::parse(name).is_ok_and(|n| n.has_page_header())
}

/// Whether WAL file `name` comes before `first`, the first segment archived in format 2: a
/// history file when its timeline is not newer than `first`'s, anything else when its
/// position (log and segment number, whatever the timeline) is below `first`'s.
fn wal_before_mark(name: &str, first: &str) -> bool {
    let (Ok(parsed), Some(mark_tli), Some(mark_pos)) = (WalFileName::parse(name), first.get(..8), first.get(8..24))
    else {
        return false;
    };
    match parsed {
        WalFileName::History { tli } => u32::from_str_radix(mark_tli, 16).is_ok_and(|m| tli <= m),
        _ => name.get(8..24).is_some_and(|pos| pos.to_ascii_uppercase().as_str() < mark_pos),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ops::repo::identity::{EnvIdentity, Format1Marks};

    fn identity(format1: Option<Format1Marks>) -> Identity {
        let mut id: Identity = serde_json::from_str(
            r#"{"format":2,"created_at":"2026-01-01T00:00:00Z","encrypted":false,"repository_id":"00112233445566778899aabbccddeeff"}"#,
        )
        .unwrap();
        id.envs.insert(
            "production".into(),
            EnvIdentity {
                system_identifier: crate::wal::SystemId(7_300_000_000_000_000_005),
                pg_major: Some(15),
                wal_segment_size: 16 << 20,
                created_at: Utc::now(),
            },
        );
        id.format1 = format1;
        id
    }

    #[test]
    fn contexts_of_each_kind() {
        let place = Place::of(Some(&identity(None)), "production", &Keyring::none());
        let seg = place.context(&Logical::Wal("000000010000000000000003")).unwrap();
        assert_eq!(
            (seg.object.as_str(), seg.system_identifier),
            ("wal/000000010000000000000003", 7_300_000_000_000_000_005)
        );
        assert_eq!(hex::encode(seg.repository), "00112233445566778899aabbccddeeff");
        let part = place.context(&Logical::Part { backup: "main_production_20260101_000000", index: 2 }).unwrap();
        assert_eq!(part.object, "backup/main_production_20260101_000000/part/2");
        let files = place.context(&Logical::Files { kind: "uploads", backup: "b", file: "archive.tar" }).unwrap();
        assert_eq!((files.object.as_str(), files.system_identifier), ("files/uploads/b/archive.tar", 0));
        assert!(place.expect(&Logical::Wal("00000002.history")).cluster_optional);
        assert!(!place.expect(&Logical::Wal("000000010000000000000003")).cluster_optional);
        assert!(Place::of(None, "production", &Keyring::none()).context(&Logical::Manifest("b")).is_err());
    }

    #[test]
    fn format1_rules() {
        let created_new = Place::of(Some(&identity(None)), "production", &Keyring::none());
        assert!(created_new.expect(&Logical::Wal("000000010000000000000003")).format1.is_err());
        assert!(
            Place::of(None, "production", &Keyring::none())
                .expect(&Logical::Wal("000000010000000000000003"))
                .format1
                .is_ok()
        );

        let until = "2026-06-01T12:00:00Z".parse().unwrap();
        let pending = Format1Marks { until, wal_before: Default::default(), seal: None };
        let place = Place::of(Some(&identity(Some(pending.clone()))), "production", &Keyring::none());
        assert!(place.first_format2_wal_pending());
        assert!(place.expect(&Logical::Wal("0000000300000000000000FF")).format1.is_ok());
        let mut marked = pending;
        marked.wal_before.insert("production".into(), "000000020000000000000010".into());
        let place = Place::of(Some(&identity(Some(marked))), "production", &Keyring::none());
        let ok = |name| place.expect(&Logical::Wal(name)).format1.is_ok();
        assert!(ok("00000001000000000000000F") && ok("00000002000000000000000F") && ok("00000002.history"));
        assert!(ok("00000001000000000000000E.00000028.backup"));
        assert!(!ok("000000010000000000000010") && !ok("000000020000000000000011") && !ok("00000003.history"));
        let err = place.expect(&Logical::Wal("000000020000000000000011")).format1.unwrap_err();
        assert!(err.contains("since 000000020000000000000010"), "{err}");
        let backup = |name| place.expect(&Logical::Part { backup: name, index: 0 }).format1.is_ok();
        assert!(backup("main_production_20260601_115959") && !backup("main_production_20260601_120000"));
        assert!(!backup("no-timestamp"));
    }

    /// In an encrypted repository the marks count only with a seal of a configured key over
    /// these very marks: added, widened or copied marks read no format-1 object.
    #[test]
    fn format1_marks_need_their_seal() {
        let key = crate::codec::Key::from_bytes([7; 32]);
        let ring = Keyring::new(Some(key.clone()), vec![]);
        let until = "2026-06-01T12:00:00Z".parse().unwrap();
        let mut marks = Format1Marks { until, wal_before: Default::default(), seal: None };
        marks.wal_before.insert("production".into(), "000000010000000000000010".into());
        let mut id = identity(Some(marks));
        id.encrypted = true;
        let ok = |id: &Identity, ring: &Keyring| {
            Place::of(Some(id), "production", ring).expect(&Logical::Wal("00000001000000000000000F")).format1
        };
        assert!(ok(&id, &ring).unwrap_err().contains("not sealed"), "no seal");
        crate::ops::repo::identity::test_seal(&mut id, &key);
        assert!(ok(&id, &ring).is_ok(), "sealed");
        assert!(ok(&id, &Keyring::new(Some(crate::codec::Key::from_bytes([8; 32])), vec![])).is_err(), "other key");
        let mut widened = id.clone();
        if let Some(m) = widened.format1.as_mut() {
            m.wal_before.insert("production".into(), "0000000100000000000000FF".into());
        }
        assert!(ok(&widened, &ring).is_err(), "edited marks");
        let mut moved = id.clone();
        moved.repository_id = Some("ffeeddccbbaa99887766554433221100".into());
        assert!(ok(&moved, &ring).is_err(), "marks copied from another repository");
    }
}
