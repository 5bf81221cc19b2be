//! End-to-end tests of cluster mode: `gangway::provider::kube::run` against the in-memory API
//! server of `gangway-test-apiserver`, with real kube-rs clients, watches and Leases.

mod events;
mod fixtures;
mod harness;
mod kubectl;
mod leader;
mod recovery;
mod routes;
mod status;
