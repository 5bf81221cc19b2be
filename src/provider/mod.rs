//! Providers fill the compiler's [`crate::store::Store`] from a source of objects.

pub mod kube;
pub mod manifests;
pub mod parse;
