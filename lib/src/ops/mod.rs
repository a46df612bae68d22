//! Operations: the one place where WAL parsing, layout, codec and storage meet. Each binary
//! calls one function here.

pub mod base_backup;
pub mod catalog;
pub mod decrypt;
pub mod fetch_missing;
pub mod files;
pub mod human;
pub mod identity;
pub mod keys;
pub mod list;
pub mod metadata_auth;
pub mod objects;
pub mod pitr_prepare;
pub mod prefetch;
pub mod prune;
mod prune_plan;
pub mod push_ahead;
pub mod restore_test;
mod restore_test_server;
mod restore_test_sql;
pub mod status;
pub mod verify;
mod verify_backups;
pub mod verify_wal;
pub mod wal_fetch;
pub mod wal_index;
pub mod wal_push;

use std::sync::Arc;

use crate::Result;
use crate::codec::CodecSettings;
use crate::codec::crypt::Keyring;
use crate::config::Config;
use crate::layout::Layout;
use crate::storage::Storage;

/// An opened repository: storage plus everything needed to read and write its objects.
#[derive(Clone)]
pub struct Repo {
    pub storage: Storage,
    pub layout: Layout,
    pub keyring: Arc<Keyring>,
    pub codec: CodecSettings,
    /// `s3://bucket/prefix` or `file:///path`, for messages and cache names.
    pub url: String,
}

impl Repo {
    /// Build the storage client for `config` (no request is sent).
    ///
    /// # Errors
    /// A storage client that cannot be built from the settings.
    pub async fn open(config: &Config) -> Result<Self> {
        let storage = Storage::open(&config.repo, &config.s3).await?;
        Ok(Repo {
            storage,
            layout: Layout::new(&config.env),
            keyring: Arc::clone(&config.keyring),
            codec: config.codec,
            url: config.repo.to_string(),
        })
    }

    /// Download and decode a small object (manifest, history file, a WAL file to compare)
    /// into memory. `allow_unencrypted` lets a keyed reader compare with an unencrypted object.
    ///
    /// # Errors
    /// Not found, storage, key and corruption errors naming the object.
    pub async fn read_object(&self, key: &str, allow_unencrypted: bool) -> Result<Vec<u8>> {
        let body = self.storage.get_bytes(key).await?;
        let object = self.storage.describe(key);
        let keyring = self.keyring.clone();
        blocking(move || {
            let mut out = Vec::new();
            crate::codec::decode_to(body.as_ref(), &keyring, &object, allow_unencrypted, &mut out, "memory")?;
            Ok(out)
        })
        .await
    }

    /// The object extension this repository writes with: compression then encryption.
    pub fn object_ext(&self) -> String {
        crate::codec::object_ext(&self.codec, self.keyring.is_encrypted())
    }
}

/// Run blocking work (codecs, file I/O) off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| crate::Error::Invalid(format!("internal task failed: {e}")))?
}
