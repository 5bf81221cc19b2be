//! Host lookup: exact names by hash, then `*.suffix` wildcards that cover exactly one DNS label.

use std::borrow::Cow;
use std::collections::HashMap;

use foldhash::fast::RandomState;

/// A table from host names to values, with Ingress wildcard semantics.
///
/// Keys are lower case. A wildcard key `*.example.com` matches `foo.example.com` but neither
/// `example.com` nor `a.b.example.com`, as the Ingress v1 `rules[].host` field defines.
#[derive(Clone, Debug)]
pub struct HostTable<T> {
    /// Hashed with foldhash, seeded per process, because every request hashes its host here
    /// and SipHash showed in the proxy's profile.
    exact: HashMap<Box<str>, T, RandomState>,
    /// Keyed by the suffix after `*.`, so a lookup costs one more hash at most.
    wildcard: HashMap<Box<str>, T, RandomState>,
}

impl<T> Default for HostTable<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::default(),
            wildcard: HashMap::default(),
        }
    }
}

impl<T> HostTable<T> {
    /// Inserts `value` for `host` (exact, or `*.suffix`) unless the host is already present.
    /// Returns the existing value on conflict; the first insert wins.
    pub fn insert(&mut self, host: &str, value: T) -> Result<(), &T> {
        let host = host.to_ascii_lowercase();
        let (map, key) = match host.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.to_owned()),
            None => (&mut self.exact, host),
        };
        match map.entry(key.into_boxed_str()) {
            std::collections::hash_map::Entry::Occupied(entry) => Err(entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(value);
                Ok(())
            }
        }
    }

    /// Returns the value for a configured host exactly as written (`foo.com` or `*.foo.com`).
    pub fn get_configured(&self, host: &str) -> Option<&T> {
        let host = host.to_ascii_lowercase();
        match host.strip_prefix("*.") {
            Some(suffix) => self.wildcard.get(suffix),
            None => self.exact.get(host.as_str()),
        }
    }

    /// Returns the value for a configured host, creating it with `make` when missing.
    pub fn ensure_with(&mut self, host: &str, make: impl FnOnce() -> T) -> &mut T {
        let host = host.to_ascii_lowercase();
        let (map, key) = match host.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.to_owned()),
            None => (&mut self.exact, host),
        };
        map.entry(key.into_boxed_str()).or_insert_with(make)
    }

    /// Looks up the value that serves a request for `host`: the exact name first, then the
    /// wildcard for its parent domain. `host` may carry a port and a trailing dot, as in a
    /// `Host` header; case does not matter.
    pub fn lookup(&self, host: &str) -> Option<&T> {
        let host = normalize_host(host)?;
        if let Some(value) = self.exact.get(host.as_ref()) {
            return Some(value);
        }
        let (first_label, parent) = host.split_once('.')?;
        if first_label.is_empty() {
            return None;
        }
        self.wildcard.get(parent)
    }

    /// Iterates over `(host, value)` pairs, wildcards written as `*.suffix`, in no fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (Cow<'_, str>, &T)> {
        let exact = self
            .exact
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_ref()), v));
        let wildcard = self
            .wildcard
            .iter()
            .map(|(k, v)| (Cow::Owned(format!("*.{k}")), v));
        exact.chain(wildcard)
    }

    /// Iterates mutably over the values, in no fixed order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.exact.values_mut().chain(self.wildcard.values_mut())
    }

    /// Returns the number of hosts, exact and wildcard.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Returns true when the table has no host.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Strips a port and a trailing dot from a `Host` header or SNI value and lowercases it.
/// Returns `None` for an empty host. Allocates only when the host contains upper case.
pub fn normalize_host(host: &str) -> Option<Cow<'_, str>> {
    let without_port = if host.starts_with('[') {
        // An IPv6 literal such as `[::1]:8080`; it can only match a rule without host.
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    let name = without_port.strip_suffix('.').unwrap_or(without_port);
    if name.is_empty() {
        return None;
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(name))
    }
}
