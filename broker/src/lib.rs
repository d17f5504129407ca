//! The Strata broker.
//!
//! Today it holds the Raft metadata controller ([`controller`]); request
//! handling, replicas and the `logd` binary build on it.

pub mod controller;
