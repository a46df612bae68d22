//! Every object key of the repository, in one place (SPEC section 3). Pure strings: this
//! module never calls storage.
//!
//! ```text
//! walvault.json                                   repository identity
//! wal/<env>/YYYY/MM/DD/<walfile><ext>             WAL, by UTC day of archiving
//! database/<env>/<cluster>_<env>_YYYYMMDD_HHMMSS/ one base backup: parts and manifest
//! database/<env>/<cluster>_<env>_YYYYMMDD_HHMMSS_metadata.json
//! database/<env>/latest.json                      newest complete backup
//! files/<env>/<kind>/<kind>_<env>_YYYYMMDD_HHMMSS/ one file-storage backup: archive and manifest
//! files/<env>/<kind>/<kind>_<env>_YYYYMMDD_HHMMSS_metadata.json
//! files/<env>/<kind>/latest.json                  newest complete file-storage backup
//! verification_reports/<env>/verification_YYYYMMDD_HHMMSS.json
//! status/<env>/summary.json                       newest WAL, backups, last verification
//! ```

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use crate::wal::segment::NAME_SUFFIXES;

/// The repository identity object.
pub const IDENTITY_KEY: &str = "walvault.json";

/// Key builder for one environment of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    env: String,
}

/// A WAL object key taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalKey {
    pub day: NaiveDate,
    /// The PostgreSQL file name (`000000010000000000000003`, `00000002.history`, ...).
    pub name: String,
    /// Everything after the name: `.zst.enc`, `.gz`, or empty.
    pub ext: String,
}

impl Layout {
    /// Keys for environment `env` (already checked to be a safe path segment by config).
    pub fn new(env: &str) -> Self {
        Layout { env: env.to_string() }
    }

    /// The environment segment.
    pub fn env(&self) -> &str {
        &self.env
    }

    /// `wal/<env>/`: the root of this environment's WAL.
    pub fn wal_root(&self) -> String {
        format!("wal/{}/", self.env)
    }

    /// `wal/<env>/YYYY/MM/DD/`: one day partition.
    pub fn wal_day_prefix(&self, day: NaiveDate) -> String {
        format!("wal/{}/{:04}/{:02}/{:02}/", self.env, day.year(), day.month(), day.day())
    }

    /// The key of WAL file `name` archived on `day`.
    pub fn wal_key(&self, day: NaiveDate, name: &str, ext: &str) -> String {
        format!("{}{name}{ext}", self.wal_day_prefix(day))
    }

    /// Take a WAL key apart; `None` for keys that are not WAL objects of this environment.
    pub fn parse_wal_key(&self, key: &str) -> Option<WalKey> {
        let rest = key.strip_prefix(&self.wal_root())?;
        let mut parts = rest.splitn(4, '/');
        let (y, m, d, file) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if y.len() != 4 || m.len() != 2 || d.len() != 2 || file.contains('/') {
            return None;
        }
        let day = NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
        let (name, ext) = split_wal_file(file)?;
        Some(WalKey { day, name: name.to_string(), ext: ext.to_string() })
    }

    /// The day partition a prefix returned by a delimiter listing of [`Layout::wal_root`]
    /// names, at any depth: `wal/<env>/2024/` → `None`, `wal/<env>/2024/01/15/` → that day.
    pub fn parse_wal_day_prefix(&self, prefix: &str) -> Option<NaiveDate> {
        let rest = prefix.strip_prefix(&self.wal_root())?.strip_suffix('/')?;
        let mut parts = rest.split('/');
        let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
    }

    /// `database/<env>/`.
    pub fn database_root(&self) -> String {
        format!("database/{}/", self.env)
    }

    /// A backup's name: `<cluster>_<env>_YYYYMMDD_HHMMSS` (UTC start time).
    pub fn backup_name(&self, cluster: &str, started: DateTime<Utc>) -> String {
        format!("{cluster}_{}_{}", self.env, started.format("%Y%m%d_%H%M%S"))
    }

    /// `database/<env>/<backup>/`: the folder of a backup's parts and manifest.
    pub fn backup_prefix(&self, backup: &str) -> String {
        format!("{}{backup}/", self.database_root())
    }

    /// One object inside a backup's folder.
    pub fn backup_object(&self, backup: &str, file: &str) -> String {
        format!("{}{file}", self.backup_prefix(backup))
    }

    /// `database/<env>/<backup>_metadata.json`: written last; its presence makes a backup complete.
    pub fn backup_metadata_key(&self, backup: &str) -> String {
        format!("{}{backup}_metadata.json", self.database_root())
    }

    /// The backup name of a metadata key, if it is one.
    pub fn parse_backup_metadata_key(&self, key: &str) -> Option<String> {
        let name = key.strip_prefix(&self.database_root())?.strip_suffix("_metadata.json")?;
        (!name.is_empty() && !name.contains('/')).then(|| name.to_string())
    }

    /// `database/<env>/latest.json`.
    pub fn latest_backup_key(&self) -> String {
        format!("{}latest.json", self.database_root())
    }

    /// `files/<env>/<kind>/`.
    pub fn files_root(&self, kind: &str) -> String {
        format!("files/{}/{kind}/", self.env)
    }

    /// A file-storage backup's name: `<kind>_<env>_YYYYMMDD_HHMMSS` (UTC).
    pub fn files_backup_name(&self, kind: &str, at: DateTime<Utc>) -> String {
        format!("{kind}_{}_{}", self.env, at.format("%Y%m%d_%H%M%S"))
    }

    /// `files/<env>/<kind>/<backup>/<file>`: the archive and manifest of one file backup.
    pub fn files_object(&self, kind: &str, backup: &str, file: &str) -> String {
        format!("{}{backup}/{file}", self.files_root(kind))
    }

    /// `files/<env>/<kind>/<backup>_metadata.json`: written last; makes the backup complete.
    pub fn files_metadata_key(&self, kind: &str, backup: &str) -> String {
        format!("{}{backup}_metadata.json", self.files_root(kind))
    }

    /// The backup name of a file-backup metadata key of `kind`, if it is one.
    pub fn parse_files_metadata_key(&self, kind: &str, key: &str) -> Option<String> {
        let name = key.strip_prefix(&self.files_root(kind))?.strip_suffix("_metadata.json")?;
        (!name.is_empty() && !name.contains('/')).then(|| name.to_string())
    }

    /// `files/<env>/<kind>/latest.json`.
    pub fn files_latest_key(&self, kind: &str) -> String {
        format!("{}latest.json", self.files_root(kind))
    }

    /// `verification_reports/<env>/`.
    pub fn verification_reports_root(&self) -> String {
        format!("verification_reports/{}/", self.env)
    }

    /// `verification_reports/<env>/verification_YYYYMMDD_HHMMSS.json`.
    pub fn verification_report_key(&self, at: DateTime<Utc>) -> String {
        format!("{}verification_{}.json", self.verification_reports_root(), at.format("%Y%m%d_%H%M%S"))
    }

    /// `status/<env>/summary.json`: what `walvault status` reads instead of listing everything.
    pub fn summary_key(&self) -> String {
        format!("status/{}/summary.json", self.env)
    }

    /// When a report was written, from its key; `None` for other keys.
    pub fn parse_verification_report_key(&self, key: &str) -> Option<DateTime<Utc>> {
        let stamp = key.strip_prefix(&self.verification_reports_root())?.strip_prefix("verification_")?;
        name_time(stamp.strip_suffix(".json")?)
    }
}

/// The UTC time at the end of a name ending in `YYYYMMDD_HHMMSS` (backup, file-backup and
/// report names), or `None`.
pub fn name_time(name: &str) -> Option<DateTime<Utc>> {
    let stamp = name.get(name.len().checked_sub(15)?..)?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S").ok().map(|t| t.and_utc())
}

/// Split `000000010000000000000003.zst.enc` into the PostgreSQL name and the extension.
/// WAL names never contain dots except their suffixes ([`NAME_SUFFIXES`]).
fn split_wal_file(file: &str) -> Option<(&str, &str)> {
    for suffix in NAME_SUFFIXES {
        if let Some(at) = file.find(suffix) {
            let end = at + suffix.len();
            return Some((&file[..end], &file[end..]));
        }
    }
    match file.find('.') {
        Some(at) => Some((&file[..at], &file[at..])),
        None => Some((file, "")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 1, 5).expect("date")
    }

    #[test]
    fn wal_keys_round_trip() {
        let l = Layout::new("production");
        let key = l.wal_key(day(), "000000010000000A000000FE", ".zst.enc");
        assert_eq!(key, "wal/production/2024/01/05/000000010000000A000000FE.zst.enc");
        let parsed = l.parse_wal_key(&key).expect("parse");
        assert_eq!(parsed.name, "000000010000000A000000FE");
        assert_eq!(parsed.ext, ".zst.enc");
        assert_eq!(parsed.day, day());
        for (file, name, ext) in [
            ("00000002.history.gz.enc", "00000002.history", ".gz.enc"),
            ("000000010000000000000002.00000028.backup.zst", "000000010000000000000002.00000028.backup", ".zst"),
            ("000000010000000000000009.partial", "000000010000000000000009.partial", ""),
        ] {
            let k = l.parse_wal_key(&l.wal_key(day(), name, ext)).expect(file);
            assert_eq!((k.name.as_str(), k.ext.as_str()), (name, ext));
        }
    }

    #[test]
    fn foreign_keys_are_not_wal() {
        let l = Layout::new("production");
        assert_eq!(l.parse_wal_key("wal/staging/2024/01/05/000000010000000A000000FE"), None);
        assert_eq!(l.parse_wal_key("wal/production/2024/13/05/000000010000000A000000FE"), None);
        assert_eq!(l.parse_wal_key("wal/production/2024/01/05/x/y"), None);
        assert_eq!(l.parse_wal_day_prefix("wal/production/2024/"), None);
        assert_eq!(l.parse_wal_day_prefix("wal/production/2024/01/05/"), Some(day()));
    }

    #[test]
    fn backup_keys() {
        let l = Layout::new("production");
        let t = DateTime::parse_from_rfc3339("2024-01-05T02:00:07Z").expect("time").with_timezone(&Utc);
        let name = l.backup_name("mykadoo", t);
        assert_eq!(name, "mykadoo_production_20240105_020007");
        assert_eq!(
            l.backup_metadata_key(&name),
            "database/production/mykadoo_production_20240105_020007_metadata.json"
        );
        assert_eq!(l.parse_backup_metadata_key(&l.backup_metadata_key(&name)), Some(name.clone()));
        assert_eq!(
            l.backup_object(&name, "manifest.json"),
            "database/production/mykadoo_production_20240105_020007/manifest.json"
        );
        assert_eq!(l.latest_backup_key(), "database/production/latest.json");
        assert_eq!(l.verification_report_key(t), "verification_reports/production/verification_20240105_020007.json");
        assert_eq!(l.files_root("uploads"), "files/production/uploads/");
        assert_eq!(l.parse_verification_report_key(&l.verification_report_key(t)), Some(t));
        assert_eq!(name_time(&name), Some(t));
        assert_eq!(name_time("x"), None);
        let files = l.files_backup_name("uploads", t);
        assert_eq!(files, "uploads_production_20240105_020007");
        assert_eq!(
            l.files_object("uploads", &files, "archive.tar"),
            format!("files/production/uploads/{files}/archive.tar")
        );
        assert_eq!(l.parse_files_metadata_key("uploads", &l.files_metadata_key("uploads", &files)), Some(files));
        assert_eq!(l.files_latest_key("config"), "files/production/config/latest.json");
    }
}
