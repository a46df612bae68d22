//! wal-fetch's answer for a file the archive does not hold: the true end (exit 1), or a
//! hole (recovery must stop), decided by `wal::follow` over a fresh listing.

use crate::Error;
use crate::ops::Repo;
use crate::ops::repo::catalog::WalArchive;
use crate::ops::repo::local::Plan;
use crate::ops::repo::wal_index::WalIndex;
use crate::wal::WalFileName;
use crate::wal::follow::{self, Answer};

/// The error for `name` not found: [`Error::NotFound`] at the true end (and for history
/// files of timelines that do not exist), [`Error::Hole`] for a hole: the file PostgreSQL
/// must read is missing although the archive holds later WAL on the recovery's path. The
/// open days are listed again first, so a lagging listing cannot fake either.
pub async fn missing(repo: &Repo, name: &WalFileName, index: &mut WalIndex, plan: Option<&Plan>) -> Error {
    let not_found = || Error::not_found(format!("{name} in {} (wal/{}/)", repo.url, repo.layout.env()));
    let seg_size = plan
        .map(|p| p.seg_size)
        .or_else(|| index.identity().and_then(|id| id.envs.get(repo.layout.env())).map(|e| e.wal_segment_size));
    let Some(seg_size) = seg_size.filter(|s| crate::wal::is_valid_seg_size(*s)) else { return not_found() };
    let archive = match index.load_everything(repo).await {
        Ok(files) => WalArchive::from_files(repo, files, seg_size).await,
        Err(e) => Err(e),
    };
    let archive = match archive {
        Ok(a) => a,
        Err(e) => return e,
    };
    if archive.files.contains_key(&name.to_string()) {
        return Error::Refused(format!(
            "{name} appeared in the archive while wal-fetch looked for it (a listing that lagged); run the command again"
        ));
    }
    let answer = match name {
        WalFileName::History { tli } => follow::answer_history(&archive.timelines, &archive.present, false, *tli),
        WalFileName::Segment { .. } => {
            let Some(segno) = name.segno(seg_size) else { return not_found() };
            match plan {
                Some(p) => follow::answer(&p.path(), &archive.present, name.tli(), segno),
                None => follow::answer_unplanned(&archive.timelines, &archive.present, seg_size, name.tli(), segno),
            }
        }
        _ => Answer::NotFound,
    };
    match answer {
        Answer::Hole => hole(repo, name, &archive),
        _ => not_found(),
    }
}

fn hole(repo: &Repo, name: &WalFileName, archive: &WalArchive) -> Error {
    let what = match name {
        WalFileName::History { tli } => format!("timeline {tli} has WAL or descendants in the archive"),
        _ => {
            let seg = archive.seg_size;
            let segno = name.segno(seg).unwrap_or(0);
            let later = archive.present.range((segno.saturating_add(1), 0)..).next();
            later.map_or("later WAL is archived".to_string(), |&(s, t)| {
                format!("later WAL is archived ({})", WalFileName::from_segno(t, s, seg))
            })
        }
    };
    Error::Hole(format!(
        "{name} is missing from {} (wal/{}/) although {what}: a hole, not the end of the archive; \
         recovery must stop here rather than promote without the WAL after it",
        repo.url,
        repo.layout.env()
    ))
}
