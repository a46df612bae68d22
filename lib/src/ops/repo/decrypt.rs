//! `walvault decrypt OBJECT|-`: any repository object back to plain bytes, for emergencies.

use std::io::Write;

use tokio_util::io::SyncIoBridge;

use crate::codec;
use crate::ops::Repo;
use crate::ops::repo::blocking;
use crate::{Error, Result};

/// Where the object comes from.
pub enum Source {
    /// A key in the repository (`wal/production/2024/01/15/0000…zst.enc`).
    Key(String),
    /// A local file (a downloaded object).
    File(std::path::PathBuf),
    /// Standard input.
    Stdin,
}

/// Decode `source` to `out`; returns the number of plaintext bytes.
///
/// # Errors
/// Not found, wrong key, corruption (naming the object), storage and I/O failures.
pub async fn decrypt<W: Write + Send + 'static>(repo: &Repo, source: Source, out: W) -> Result<u64> {
    let keyring = repo.keyring.clone();
    let (name, input): (String, Box<dyn std::io::Read + Send>) = match source {
        Source::Key(key) => {
            let reader = repo.storage.get(&key).await?;
            (repo.storage.describe(&key), Box::new(SyncIoBridge::new(reader)))
        }
        Source::File(path) => {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            (path.display().to_string(), Box::new(file))
        }
        Source::Stdin => ("standard input".to_string(), Box::new(std::io::stdin())),
    };
    blocking(move || {
        let mut out = out;
        let reader = std::io::BufReader::with_capacity(1 << 20, input);
        let (_, n) = codec::decode_to(reader, &keyring, &name, None, true, &mut out, "standard output")?;
        out.flush().map_err(|e| Error::io("standard output", e))?;
        Ok(n)
    })
    .await
}
