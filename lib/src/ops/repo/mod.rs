//! The opened repository: the services every command room shares (catalog of backups, WAL
//! index, identity and place, metadata authentication, timelines, display helpers). Nothing
//! here depends on a command room.

pub mod catalog;
pub mod chain;
pub mod decrypt;
pub mod envs;
pub mod files_catalog;
pub mod human;
pub mod identity;
pub mod keys;
pub mod local;
pub mod metadata;
pub mod metadata_auth;
pub mod objects;
pub mod parts;
pub mod phases;
pub mod place;
pub mod progress;
pub mod reports;
pub mod runtime;
pub mod summary;
#[cfg(test)]
pub mod test_repo;
pub mod timelines;
pub mod wal_file;
pub mod wal_index;
pub mod windows;

use std::sync::{Arc, Mutex};

use crate::Result;
use crate::codec::crypt::Keyring;
use crate::codec::{CodecSettings, Expect};
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
    /// Time between two progress lines of a long command without a terminal.
    pub progress_interval: std::time::Duration,
    /// Where this environment's objects belong, once known (see [`Repo::place`]).
    place: Arc<Mutex<Option<place::Place>>>,
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
            progress_interval: config.progress_interval,
            place: Arc::default(),
        })
    }

    /// Where this environment's objects belong: known after a writer checked the identity
    /// or a reader set it from its cache, else read from `walvault.json` now (once).
    ///
    /// # Errors
    /// Storage failures; an unreadable identity.
    pub async fn place(&self) -> Result<place::Place> {
        if let Some(p) = self.known_place() {
            return Ok(p);
        }
        let id = identity::load(self).await?;
        self.set_place(id.as_ref());
        Ok(place::Place::of(id.as_ref(), self.layout.env(), &self.keyring))
    }

    /// The place, if already known.
    pub fn known_place(&self) -> Option<place::Place> {
        self.place.lock().ok().and_then(|p| p.clone())
    }

    /// Use identity `id` (`None`: the repository has none) for every object from now on.
    pub fn set_place(&self, id: Option<&identity::Identity>) {
        if let Ok(mut p) = self.place.lock() {
            *p = Some(place::Place::of(id, self.layout.env(), &self.keyring));
        }
    }

    /// What a reader of `what` demands here.
    ///
    /// # Errors
    /// As [`Repo::place`].
    pub async fn expect(&self, what: &place::Logical<'_>) -> Result<Expect> {
        Ok(self.place().await?.expect(what))
    }

    /// The context a writer binds `what` to.
    ///
    /// # Errors
    /// As [`Repo::place`]; [`crate::Error::Refused`] without a repository id.
    pub async fn context(&self, what: &place::Logical<'_>) -> Result<crate::codec::Context> {
        self.place().await?.context(what)
    }

    /// Download and decode a small object (manifest, history file, a WAL file to compare)
    /// into memory; it must be bound to `what` here. `allow_unencrypted` lets a keyed reader
    /// compare with an unencrypted object.
    ///
    /// # Errors
    /// Not found, storage, key and corruption errors naming the object; [`crate::Error::Misplaced`].
    pub async fn read_object(&self, key: &str, what: &place::Logical<'_>, allow_unencrypted: bool) -> Result<Vec<u8>> {
        let expect = self.expect(what).await?;
        let body = self.storage.get_bytes(key).await?;
        let object = self.storage.describe(key);
        let keyring = self.keyring.clone();
        blocking(move || {
            let mut out = Vec::new();
            let expect = Some(&expect);
            crate::codec::decode_to(body.as_ref(), &keyring, &object, expect, allow_unencrypted, &mut out, "memory")?;
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
    tokio::task::spawn_blocking(f).await.map_err(|e| crate::Error::Internal(format!("a worker task failed: {e}")))?
}

/// An instant a century from now: the deadline of a timeout too large to add to the clock.
pub fn far_future() -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(std::time::Duration::from_secs(100 * 365 * 86_400)).unwrap_or(now)
}
