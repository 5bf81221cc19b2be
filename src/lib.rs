//! Gangway: a Kubernetes ingress controller whose data plane is an in-process Rust proxy.
//!
//! Providers fill a [`store::Store`]; [`compile`] turns it into a [`snapshot::Snapshot`] and a
//! [`status::StatusReport`]; the proxy serves the live snapshot, swapped in without a reload.

pub mod alloc;
pub mod check;
pub mod cli;
pub mod compile;
pub mod controller;
pub mod demo;
pub mod live;
pub mod metrics;
pub mod provider;
pub mod proxy;
pub mod run;
pub mod snapshot;
pub mod status;
pub mod store;
