//! What a data directory says about itself without a running server: the system identifier
//! in `global/pg_control` and whether `postmaster.pid` names a live server.

use std::io::{ErrorKind, Read};
use std::path::Path;

use crate::{Error, Result};

/// The control file, relative to PGDATA.
pub const PG_CONTROL: &str = "global/pg_control";

/// The system identifier in `pgdata/<file>` (the control file's first field, in the machine's
/// byte order); `None` when the file does not exist.
///
/// # Errors
/// [`Error::Io`] naming the file for a read failure; [`Error::Invalid`] for a file too short
/// to hold an identifier or holding zero.
pub fn system_identifier_in(pgdata: &Path, file: &str) -> Result<Option<u64>> {
    let path = pgdata.join(file);
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut head = [0u8; 8];
    f.read_exact(&mut head).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => Error::Invalid(format!("{} is too short to be a control file", path.display())),
        _ => Error::io(&path, e),
    })?;
    match u64::from_ne_bytes(head) {
        0 => Err(Error::Invalid(format!("{} holds no system identifier", path.display()))),
        id => Ok(Some(id)),
    }
}

/// The process id `postmaster.pid` names, when the file exists and that process is a running
/// PostgreSQL server (`/proc/<pid>/comm` is `postgres` or `postmaster`). A file left by a
/// server that crashed, or naming a process id since reused by another program, is stale:
/// `None`.
pub fn live_postmaster(pgdata: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok().filter(|p| *p > 0)?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    matches!(comm.trim(), "postgres" | "postmaster").then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_missing_short_zero_and_present() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(system_identifier_in(tmp.path(), PG_CONTROL), Ok(None)));
        std::fs::create_dir(tmp.path().join("global")).unwrap_or_else(|e| panic!("{e}"));
        let file = tmp.path().join(PG_CONTROL);
        std::fs::write(&file, [1u8, 2, 3]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(system_identifier_in(tmp.path(), PG_CONTROL), Err(Error::Invalid(_))));
        std::fs::write(&file, [0u8; 16]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(system_identifier_in(tmp.path(), PG_CONTROL), Err(Error::Invalid(_))));
        let mut bytes = 7_354_123_456_789u64.to_ne_bytes().to_vec();
        bytes.extend([0u8; 100]);
        std::fs::write(&file, bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(system_identifier_in(tmp.path(), PG_CONTROL).ok().flatten(), Some(7_354_123_456_789));
    }

    #[test]
    fn stale_and_live_postmaster_pid() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(live_postmaster(tmp.path()), None);
        // Our own pid is alive but not a PostgreSQL server: stale.
        let me = std::process::id();
        std::fs::write(tmp.path().join("postmaster.pid"), format!("{me}\n/x\n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(live_postmaster(tmp.path()), None);
        std::fs::write(tmp.path().join("postmaster.pid"), "garbage\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(live_postmaster(tmp.path()), None);
    }
}
