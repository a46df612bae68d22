//! Operations: the one place where WAL parsing, layout, codec and storage meet. One room per
//! job; each binary calls one function in one room. Rooms meet only in [`repo`], the services
//! of an opened repository, and never borrow from each other (see `docs/ARCHITECTURE.md`).

pub mod archive;
pub mod backup;
pub mod repo;
pub mod report;
pub mod restore;
pub mod retention;
pub mod verify;

pub use repo::Repo;
