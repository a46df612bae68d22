//! Request counting: the [`RequestStats`] a storage reports and the shared atomic
//! [`Counters`] behind it, bumped once per request by both backends.

use std::sync::atomic::{AtomicU64, Ordering};

/// Request counters per operation (for tests and `--json` stats). A listing of N pages
/// counts N; `put` counts `put` and `put_if_absent`. SDK-internal retries are not counted.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RequestStats {
    pub put: u64,
    pub get: u64,
    pub head: u64,
    pub list: u64,
    pub delete: u64,
}

/// Shared atomic counters behind [`RequestStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
}

/// Which counter a request bumps.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Put,
    Get,
    Head,
    List,
    Delete,
}

impl Counters {
    pub(crate) fn count(&self, op: Op) {
        let counter = match op {
            Op::Put => &self.put,
            Op::Get => &self.get,
            Op::Head => &self.head,
            Op::List => &self.list,
            Op::Delete => &self.delete,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RequestStats {
        RequestStats {
            put: self.put.load(Ordering::Relaxed),
            get: self.get.load(Ordering::Relaxed),
            head: self.head.load(Ordering::Relaxed),
            list: self.list.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
        }
    }
}
