//! Object format: header, compression, encryption. (stub: owned by the codec worker)

pub mod compress;
pub mod crypt;
