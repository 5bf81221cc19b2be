//! Install test: the Helm chart rendered with real Helm, applied with the real `kubectl` to
//! the test API server, and two `gangway run` processes started with the chart's own flags,
//! driven as an operator would.
//!
//! Needs `.venv` (create it with `e2e/setup.sh`), `kubectl` and `curl` on PATH.

mod chart;
mod install;
mod tools;

// Shared with the other test binaries. The module allows dead code itself, because not
// every binary uses every helper.
#[path = "../support/mod.rs"]
mod support;
