//! Syntax checks that the API server applies to Ingress fields, redone here because the
//! manifest directory has no API server in front of it.
//!
//! The rules follow `k8s.io/kubernetes/pkg/apis/networking/validation` and
//! `k8s.io/apimachinery/pkg/util/validation`: hosts are DNS-1123 subdomains or `*.` plus one,
//! Service names are DNS-1035 labels, port names are IANA service names.

use std::fmt;
use std::net::IpAddr;

use crate::snapshot::PathMatch;

/// Maximum length of a DNS-1123 subdomain, wildcard included.
const MAX_SUBDOMAIN_LENGTH: usize = 253;
/// Maximum length of a DNS-1035 label, such as a Service name.
const MAX_LABEL_LENGTH: usize = 63;
/// Maximum length of an IANA service name, such as a Service port name.
const MAX_PORT_NAME_LENGTH: usize = 15;

/// Reason a host in `spec.rules[].host` or `spec.tls[].hosts[]` is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostError {
    /// The host is an IP address; the API server rejects those.
    #[error("must be a DNS name, not an IP address")]
    IpAddress,
    /// The host carries a port, which a `Host` header may have but the field must not.
    #[error("must not contain a port; remove the `:{port}` suffix")]
    Port {
        /// The port as written.
        port: String,
    },
    /// The host has upper case letters; hosts are compared in lower case.
    #[error("must be lower case; write `{lower}`")]
    UpperCase {
        /// The host in lower case.
        lower: String,
    },
    /// The host is longer than a DNS name can be.
    #[error("must be no more than {MAX_SUBDOMAIN_LENGTH} characters, not {length}")]
    TooLong {
        /// Length of the host as written.
        length: usize,
    },
    /// A `*` appears anywhere but as the whole first label.
    #[error("must use `*` only as the whole first label, as in `*.example.com`")]
    Wildcard,
    /// The host is not a DNS-1123 subdomain.
    #[error(
        "must be a DNS name: labels of lower case letters, digits and `-`, separated by `.`, \
         each starting and ending with a letter or digit"
    )]
    Syntax,
}

/// A host name from an Ingress that passed the API server's checks: a lower-case DNS-1123
/// subdomain such as `foo.example.com`, or a wildcard such as `*.example.com`.
///
/// Only [`HostName::parse`] builds one, so code that receives a `HostName` need not check it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct HostName(String);

impl HostName {
    /// Checks `value` as the API server checks `spec.rules[].host` and `spec.tls[].hosts[]`.
    pub(crate) fn parse(value: &str) -> Result<Self, HostError> {
        if value.parse::<IpAddr>().is_ok() {
            return Err(HostError::IpAddress);
        }
        if value.len() > MAX_SUBDOMAIN_LENGTH {
            return Err(HostError::TooLong {
                length: value.len(),
            });
        }
        // The hints for a port and for upper case come before the generic syntax error,
        // because both are common mistakes with an obvious fix.
        if let Some((_, port)) = value.rsplit_once(':')
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(HostError::Port {
                port: port.to_owned(),
            });
        }
        if value.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(HostError::UpperCase {
                lower: value.to_ascii_lowercase(),
            });
        }
        if value.contains('*') {
            let valid = value
                .strip_prefix("*.")
                .is_some_and(|suffix| !suffix.contains('*') && is_dns1123_subdomain(suffix));
            return if valid {
                Ok(Self(value.to_owned()))
            } else {
                Err(HostError::Wildcard)
            };
        }
        if !is_dns1123_subdomain(value) {
            return Err(HostError::Syntax);
        }
        Ok(Self(value.to_owned()))
    }

    /// Returns the host as written, `foo.example.com` or `*.example.com`.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns true for a wildcard host such as `*.example.com`.
    pub(crate) fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Returns true when every `.`-separated label is non-empty, uses only `a-z`, `0-9` and `-`,
/// and starts and ends with a letter or digit. The API server checks no per-label length.
fn is_dns1123_subdomain(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_SUBDOMAIN_LENGTH && value.split('.').all(is_label)
}

fn is_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Reason a Service name in a backend is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameError {
    /// The name is longer than a DNS-1035 label can be.
    #[error("must be no more than {MAX_LABEL_LENGTH} characters")]
    TooLong,
    /// The name is not a DNS-1035 label.
    #[error(
        "must be a DNS-1035 label: lower case letters, digits and `-`, starting with a letter \
         and ending with a letter or digit"
    )]
    Syntax,
}

/// Checks a Service name as the API server does (a DNS-1035 label).
pub(crate) fn validate_service_name(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_LABEL_LENGTH {
        return Err(NameError::TooLong);
    }
    let starts_with_letter = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if !starts_with_letter || !is_label(name) {
        return Err(NameError::Syntax);
    }
    Ok(())
}

/// Reason a Service port name in a backend is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PortNameError {
    /// Longer than an IANA service name can be.
    #[error("must be no more than {MAX_PORT_NAME_LENGTH} characters")]
    TooLong,
    /// A character other than `a-z`, `0-9` and `-`.
    #[error("must contain only lower case letters, digits and `-`")]
    Characters,
    /// No letter at all, so it could be mistaken for a number.
    #[error("must contain at least one letter")]
    NoLetter,
    /// A leading, trailing or doubled `-`.
    #[error("must not start or end with `-` or contain `--`")]
    Hyphens,
}

/// Checks a Service port name as the API server does (an IANA service name, RFC 6335).
pub(crate) fn validate_port_name(name: &str) -> Result<(), PortNameError> {
    if name.len() > MAX_PORT_NAME_LENGTH {
        return Err(PortNameError::TooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(PortNameError::Characters);
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(PortNameError::NoLetter);
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err(PortNameError::Hyphens);
    }
    Ok(())
}

/// Converts a port number from the API (an `int32`) to a TCP port, or `None` outside 1-65535.
pub(crate) fn port_number(number: i32) -> Option<u16> {
    u16::try_from(number).ok().filter(|port| *port != 0)
}

/// Sequences the API server rejects in Exact and Prefix paths, because they could walk out of
/// the matched path after the upstream decodes or normalizes it.
const INVALID_PATH_SEQUENCES: [&str; 5] = ["//", "/./", "/../", "%2f", "%2F"];
/// Suffixes the API server rejects in Exact and Prefix paths, for the same reason.
const INVALID_PATH_SUFFIXES: [&str; 2] = ["/..", "/."];

/// Reason `pathType` or `path` of an `http.paths[]` entry is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// `pathType` is not `Exact`, `Prefix` or `ImplementationSpecific`.
    #[error(
        "unsupported pathType `{path_type}`; use `Exact`, `Prefix` or `ImplementationSpecific`"
    )]
    UnsupportedType {
        /// The value as written.
        path_type: String,
    },
    /// The path does not start with `/`.
    #[error("path `{path}` must be an absolute path starting with `/`")]
    NotAbsolute {
        /// The path as written.
        path: String,
    },
    /// The path contains a sequence the API server rejects.
    #[error("path `{path}` must not contain `{sequence}`")]
    Sequence {
        /// The path as written.
        path: String,
        /// The rejected sequence.
        sequence: &'static str,
    },
    /// The path ends with a suffix the API server rejects.
    #[error("path `{path}` must not end with `{suffix}`")]
    Suffix {
        /// The path as written.
        path: String,
        /// The rejected suffix.
        suffix: &'static str,
    },
}

impl PathError {
    /// Returns the field the error is about, relative to the `paths[]` entry.
    pub(crate) fn field(&self) -> &'static str {
        match self {
            PathError::UnsupportedType { .. } => "pathType",
            _ => "path",
        }
    }

    /// Returns the Event reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            PathError::UnsupportedType { .. } => "UnsupportedPathType",
            _ => "InvalidPath",
        }
    }
}

/// Checks `pathType` and `path` as the API server does and returns the match to route on.
///
/// `ImplementationSpecific` is matched as `Prefix`, which is what ingress-nginx does for paths
/// without regular expressions. The API server lets it have an empty path, which matches
/// every request path like `/`.
pub(crate) fn compile_path_match(
    path_type: &str,
    path: Option<&str>,
) -> Result<PathMatch, PathError> {
    let path = path.unwrap_or("");
    match path_type {
        "Exact" | "Prefix" => {
            if !path.starts_with('/') {
                return Err(PathError::NotAbsolute {
                    path: path.to_owned(),
                });
            }
            if let Some(sequence) = INVALID_PATH_SEQUENCES
                .into_iter()
                .find(|sequence| path.contains(sequence))
            {
                return Err(PathError::Sequence {
                    path: path.to_owned(),
                    sequence,
                });
            }
            if let Some(suffix) = INVALID_PATH_SUFFIXES
                .into_iter()
                .find(|suffix| path.ends_with(suffix))
            {
                return Err(PathError::Suffix {
                    path: path.to_owned(),
                    suffix,
                });
            }
            if path_type == "Exact" {
                Ok(PathMatch::Exact(path.to_owned()))
            } else {
                Ok(PathMatch::Prefix(path.to_owned()))
            }
        }
        "ImplementationSpecific" => {
            if path.is_empty() {
                return Ok(PathMatch::Prefix("/".to_owned()));
            }
            if !path.starts_with('/') {
                return Err(PathError::NotAbsolute {
                    path: path.to_owned(),
                });
            }
            Ok(PathMatch::Prefix(path.to_owned()))
        }
        other => Err(PathError::UnsupportedType {
            path_type: other.to_owned(),
        }),
    }
}
