//! Repository storage backends. (stub: owned by the storage worker)

pub mod fs;
pub mod s3;
