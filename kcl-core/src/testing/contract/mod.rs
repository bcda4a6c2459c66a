//! Contract suites: behaviour every implementation of a seam must show, run against the
//! in-memory fakes and against the real AWS implementations alike.
pub mod lease_store;
pub mod source;
