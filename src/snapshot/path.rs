//! Path lookup with Ingress v1 semantics: Exact by hash, Prefix by a trie of path elements.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

use serde::Serialize;

use super::Route;

/// Match rule between a route's path and a request path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PathMatch {
    /// `pathType: Exact`: the request path equals the value, case-sensitively.
    Exact(String),
    /// `pathType: Prefix`, and `ImplementationSpecific` until an annotation selects another rule:
    /// the value's path elements are a prefix of the request's path elements.
    Prefix(String),
}

impl PathMatch {
    /// Returns the path as written in the Ingress.
    pub fn path(&self) -> &str {
        match self {
            PathMatch::Exact(path) | PathMatch::Prefix(path) => path,
        }
    }

    /// Returns `Exact` or `Prefix`.
    pub fn type_name(&self) -> &'static str {
        match self {
            PathMatch::Exact(_) => "Exact",
            PathMatch::Prefix(_) => "Prefix",
        }
    }
}

/// The paths of one virtual host.
///
/// The Ingress spec says the longest matching path wins and Exact beats Prefix on equal
/// length. An Exact match has the length of the whole request path, which no Prefix match can
/// exceed, so the lookup tries Exact first and then the longest Prefix. Neither step scans
/// the routes: Exact is one hash lookup, Prefix walks the trie one path element at a time.
#[derive(Clone, Debug, Default)]
pub struct PathTable {
    /// Hashed with foldhash, as the host table is, because every request probes it.
    exact: HashMap<Box<str>, Arc<Route>, RandomState>,
    prefix: PrefixNode,
    len: usize,
}

#[derive(Clone, Debug, Default)]
struct PrefixNode {
    route: Option<Arc<Route>>,
    children: HashMap<Box<str>, PrefixNode, RandomState>,
}

/// Splits a path into its elements. Empty elements are dropped, so `/foo/` and `/foo` have the
/// same elements (the spec's "ignores trailing slash") and `//foo` equals `/foo`, as nginx's
/// default `merge_slashes on` treats it.
fn elements(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|element| !element.is_empty())
}

impl PathTable {
    /// Inserts a route for `path_match` unless an equivalent match exists. Two Prefix paths
    /// with the same elements (`/foo` and `/foo/`) are equivalent. On conflict returns the
    /// route already there; the first insert wins, so callers insert oldest first.
    pub fn insert(&mut self, path_match: &PathMatch, route: Arc<Route>) -> Result<(), Arc<Route>> {
        let slot = match path_match {
            PathMatch::Exact(path) => match self.exact.entry(path.as_str().into()) {
                std::collections::hash_map::Entry::Occupied(entry) => {
                    return Err(entry.get().clone());
                }
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(route);
                    self.len += 1;
                    return Ok(());
                }
            },
            PathMatch::Prefix(path) => {
                let mut node = &mut self.prefix;
                for element in elements(path) {
                    node = node.children.entry(element.into()).or_default();
                }
                &mut node.route
            }
        };
        if let Some(existing) = slot {
            return Err(existing.clone());
        }
        *slot = Some(route);
        self.len += 1;
        Ok(())
    }

    /// Looks up the route for a request path (without the query string).
    pub fn lookup(&self, path: &str) -> Option<&Arc<Route>> {
        if let Some(route) = self.exact.get(path) {
            return Some(route);
        }
        let mut node = &self.prefix;
        let mut best = node.route.as_ref();
        for element in elements(path) {
            match node.children.get(element) {
                Some(child) => {
                    node = child;
                    if node.route.is_some() {
                        best = node.route.as_ref();
                    }
                }
                None => break,
            }
        }
        best
    }

    /// Returns every route in the table, in no fixed order.
    pub fn routes(&self) -> Vec<&Arc<Route>> {
        let mut routes: Vec<&Arc<Route>> = self.exact.values().collect();
        let mut stack = vec![&self.prefix];
        while let Some(node) = stack.pop() {
            routes.extend(node.route.as_ref());
            stack.extend(node.children.values());
        }
        routes
    }

    /// Returns the number of routes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Returns true when the table has no route.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
