//! The async runtime a command runs on: small, since one WAL file per process needs no more
//! than two workers.

use std::future::Future;

use crate::{Error, Result};

/// A multi-threaded runtime with two workers, I/O and timers enabled.
///
/// # Errors
/// [`Error::Io`] when the runtime cannot be built (threads, file descriptors).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))
}

/// Run `fut` to completion on a new [`runtime`].
///
/// # Errors
/// The runtime cannot be built; `fut`'s own error.
pub fn block_on<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    runtime()?.block_on(fut)
}
