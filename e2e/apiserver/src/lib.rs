//! An in-memory Kubernetes API server for end-to-end tests, good enough for `kubectl`
//! and kube-rs clients (watchers, reflectors, Lease-based leader election).
//!
//! It serves plain HTTP on loopback, keeps every object as JSON in one store with one
//! global resourceVersion counter, and can inject faults: failed and stalled requests,
//! dropped watches, history compaction (410 Gone) and restarts on the same address.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use gangway_test_apiserver::{ApiServer, Config};
//!
//! let server = ApiServer::start(Config::default()).await?;
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"), "tester")?;
//! // kubectl --kubeconfig /tmp/kubeconfig get ingresses
//! server.drop_watches();
//! server.restart(std::time::Duration::from_millis(200)).await?;
//! # Ok(())
//! # }
//! ```

pub mod discovery;
pub mod error;
pub mod faults;
pub mod object;
pub mod patch;
pub mod registry;
pub mod selector;
mod server;
mod service;
pub mod store;
pub mod table;
pub mod verbs;
pub mod watch;

pub use faults::{FailRule, RequestMatch, RequestRecord, StallRule};
pub use server::{ApiServer, Config, ServerError};
