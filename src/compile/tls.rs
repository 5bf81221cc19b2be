//! TLS: server certificates from the Secrets that `spec.tls` names, selected by SNI, and the
//! set of hosts whose plain-HTTP requests are redirected to HTTPS.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use k8s_openapi::api::core::v1::Secret;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::problems::Problems;
use super::select::OwnedIngress;
use super::validate::HostName;
use crate::snapshot::{CertificateTable, HostTable, TlsCertificate};
use crate::store::{ObjectKey, Store};

/// The only Secret type that `spec.tls[].secretName` may name.
pub(crate) const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// Secret key of the PEM certificate chain, end-entity certificate first.
const CERTIFICATE_KEY: &str = "tls.crt";
/// Secret key of the PEM private key.
const PRIVATE_KEY_KEY: &str = "tls.key";

/// Failure to load a TLS Secret. Messages name the Secret and key but never quote the data.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum SecretError {
    /// No Secret of that name in the Ingress namespace.
    #[error(
        "Secret `{name}` not found in namespace `{namespace}`; create a `kubernetes.io/tls` \
         Secret with `tls.crt` and `tls.key` there",
        name = secret.name,
        namespace = secret.namespace
    )]
    NotFound {
        /// The missing Secret.
        secret: ObjectKey,
    },
    /// The Secret has another type.
    #[error(
        "Secret `{name}` has type `{found}`; it must have type `kubernetes.io/tls`",
        name = secret.name
    )]
    WrongType {
        /// The Secret.
        secret: ObjectKey,
        /// Its type, `Opaque` when unset as the API server defaults it.
        found: String,
    },
    /// `tls.crt` or `tls.key` is missing from both `data` and `stringData`.
    #[error("Secret `{name}` has no `{key}` in `data` or `stringData`", name = secret.name)]
    MissingKey {
        /// The Secret.
        secret: ObjectKey,
        /// `tls.crt` or `tls.key`.
        key: &'static str,
    },
    /// `tls.crt` or `tls.key` is not valid PEM.
    #[error("failed to read `{key}` of Secret `{name}` as PEM: {problem}", name = secret.name)]
    Pem {
        /// The Secret.
        secret: ObjectKey,
        /// `tls.crt` or `tls.key`.
        key: &'static str,
        /// Description of the error that quotes none of the data.
        problem: &'static str,
    },
    /// The private key is PEM, but not a key type rustls with ring can sign with.
    #[error(
        "failed to load the private key in `tls.key` of Secret `{name}`: {error}; use an \
         RSA, ECDSA (P-256 or P-384) or Ed25519 key",
        name = secret.name
    )]
    Key {
        /// The Secret.
        secret: ObjectKey,
        /// The rustls error, which names the key type and none of the key.
        error: rustls::Error,
    },
    /// The first certificate cannot be parsed.
    #[error("failed to parse the certificate in `tls.crt` of Secret `{name}`: {error}", name = secret.name)]
    Certificate {
        /// The Secret.
        secret: ObjectKey,
        /// The rustls error.
        error: rustls::Error,
    },
    /// The private key belongs to another certificate.
    #[error(
        "the private key in `tls.key` of Secret `{name}` does not match the certificate in \
         `tls.crt`; put the key of the first certificate in `tls.key`",
        name = secret.name
    )]
    KeyMismatch {
        /// The Secret.
        secret: ObjectKey,
    },
}

impl SecretError {
    /// Returns the Event reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            SecretError::NotFound { .. } => "SecretNotFound",
            SecretError::WrongType { .. } => "InvalidSecretType",
            _ => "InvalidTlsSecret",
        }
    }
}

/// Returns the value of `key` in a Secret. `stringData` wins over `data`, because the API
/// server merges `stringData` into `data` on write and `stringData` overwrites.
fn secret_value<'s>(secret: &'s Secret, key: &str) -> Option<&'s [u8]> {
    let from_string_data = secret
        .string_data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|value| value.as_bytes());
    from_string_data.or_else(|| {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|value| value.0.as_slice())
    })
}

/// Describes a PEM error without quoting the input, which may be key material.
fn describe_pem_error(error: &pem::Error) -> &'static str {
    match error {
        pem::Error::MissingSectionEnd { .. } => {
            "a `-----BEGIN` line has no matching `-----END` line"
        }
        pem::Error::IllegalSectionStart { .. } => "a `-----BEGIN` line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::NoItemsFound => "no PEM section of the expected type was found",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "the PEM data is malformed",
    }
}

/// Loads the certificate chain and private key of a TLS Secret and checks that they match.
pub(crate) fn load_certificate(
    secret_key: &ObjectKey,
    secret: &Secret,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, SecretError> {
    let found = secret.type_.as_deref().unwrap_or("Opaque");
    if found != TLS_SECRET_TYPE {
        return Err(SecretError::WrongType {
            secret: secret_key.clone(),
            found: found.to_owned(),
        });
    }
    let missing = |key| SecretError::MissingKey {
        secret: secret_key.clone(),
        key,
    };
    let pem_error = |key, error: pem::Error| SecretError::Pem {
        secret: secret_key.clone(),
        key,
        problem: describe_pem_error(&error),
    };
    let certificate_pem =
        secret_value(secret, CERTIFICATE_KEY).ok_or_else(|| missing(CERTIFICATE_KEY))?;
    let key_pem = secret_value(secret, PRIVATE_KEY_KEY).ok_or_else(|| missing(PRIVATE_KEY_KEY))?;

    let chain = CertificateDer::pem_slice_iter(certificate_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(CERTIFICATE_KEY, error))?;
    if chain.is_empty() {
        return Err(pem_error(CERTIFICATE_KEY, pem::Error::NoItemsFound));
    }
    let private_key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|error| pem_error(PRIVATE_KEY_KEY, error))?;
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|error| SecretError::Key {
            secret: secret_key.clone(),
            error,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        // ring's signing keys all expose their public key, so Unknown cannot happen with this
        // provider; accept it anyway, as rustls's own `CertifiedKey::from_der` does.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(SecretError::KeyMismatch {
            secret: secret_key.clone(),
        }),
        Err(error) => Err(SecretError::Certificate {
            secret: secret_key.clone(),
            error,
        }),
    }
}

/// Output of the TLS pass, read by the routing pass and moved into the snapshot.
#[derive(Debug, Default)]
pub(crate) struct TlsConfig {
    /// Certificates by SNI name, and the fallback.
    pub(crate) certificates: CertificateTable,
    /// Every valid host listed in `spec.tls[].hosts` of our Ingresses, with or without a
    /// usable Secret: requests to these hosts are redirected to HTTPS.
    tls_hosts: HostTable<()>,
}

impl TlsConfig {
    /// Returns true when plain-HTTP requests for `host` should be redirected: the host, or a
    /// wildcard that covers it, is listed in `spec.tls[].hosts` of one of our Ingresses.
    pub(crate) fn covers(&self, host: &HostName) -> bool {
        if host.is_wildcard() {
            self.tls_hosts.get_configured(host.as_str()).is_some()
        } else {
            self.tls_hosts.lookup(host.as_str()).is_some()
        }
    }
}

/// The Ingress and Secret that supplied a certificate, to name the winner of a conflict.
struct Claim {
    ingress: ObjectKey,
    certificate: Arc<TlsCertificate>,
}

/// Builds the certificate table from the `spec.tls` sections of `ingresses`, oldest first.
///
/// Per host the oldest Ingress with a usable certificate wins; a newer Ingress that names
/// another Secret for that host gets a `CertificateConflict` problem. An entry without hosts
/// supplies the fallback certificate under the same rule. An entry whose Secret is unusable
/// gets an Error problem and supplies nothing, so its hosts get a certificate from a newer
/// Ingress or the proxy's default.
pub(crate) fn compile_tls(
    store: &Store,
    ingresses: &[OwnedIngress<'_>],
    problems: &mut Problems,
) -> TlsConfig {
    let provider = rustls::crypto::ring::default_provider();
    let mut loaded: HashMap<ObjectKey, Result<Arc<TlsCertificate>, SecretError>> = HashMap::new();
    let mut claims: HashMap<HostName, Claim> = HashMap::new();
    let mut fallback: Option<Claim> = None;
    let mut tls_hosts = HostTable::default();

    for owned in ingresses {
        let tls = owned.ingress.spec.as_ref().and_then(|s| s.tls.as_deref());
        for (tls_index, entry) in tls.unwrap_or_default().iter().enumerate() {
            let hosts = entry.hosts.as_deref().unwrap_or_default();
            let mut valid_hosts = Vec::with_capacity(hosts.len());
            for (host_index, host) in hosts.iter().enumerate() {
                match HostName::parse(host) {
                    Ok(host) => {
                        // Duplicates are expected: many Ingresses list the same host.
                        let _ = tls_hosts.insert(host.as_str(), ());
                        valid_hosts.push((host_index, host));
                    }
                    Err(error) => problems.ingress_error(
                        owned.key,
                        format!("spec.tls[{tls_index}].hosts[{host_index}]"),
                        "InvalidHost",
                        format!(
                            "TLS host `{host}` is invalid: it {error}; the host gets no certificate"
                        ),
                    ),
                }
            }

            let secret_field = format!("spec.tls[{tls_index}].secretName");
            let Some(secret_name) = entry.secret_name.as_deref().filter(|n| !n.is_empty()) else {
                problems.ingress_warning(
                    owned.key,
                    secret_field,
                    "MissingSecretName",
                    "secretName is empty, so the proxy serves its default certificate for this \
                     entry; name a `kubernetes.io/tls` Secret",
                );
                continue;
            };
            let secret_key = ObjectKey::new(owned.key.namespace.clone(), secret_name);
            let certificate = match loaded.entry(secret_key) {
                Entry::Occupied(entry) => entry.get().clone(),
                Entry::Vacant(entry) => {
                    let result = load_secret(store, entry.key(), &provider);
                    entry.insert(result).clone()
                }
            };
            let certificate = match certificate {
                Ok(certificate) => certificate,
                Err(error) => {
                    problems.ingress_error(
                        owned.key,
                        secret_field,
                        error.reason(),
                        format!("{error}; until then the proxy serves its default certificate for this entry"),
                    );
                    continue;
                }
            };

            if hosts.is_empty() {
                claim_fallback(
                    &mut fallback,
                    owned.key,
                    &certificate,
                    &secret_field,
                    problems,
                );
            }
            for (host_index, host) in valid_hosts {
                let field = format!("spec.tls[{tls_index}].hosts[{host_index}]");
                claim_host(&mut claims, host, owned.key, &certificate, &field, problems);
            }
        }
    }

    let mut certificates = CertificateTable::default();
    for (host, claim) in claims {
        // Keys of `claims` are distinct hosts, so no insert can conflict.
        let _ = certificates.hosts.insert(host.as_str(), claim.certificate);
    }
    certificates.fallback = fallback.map(|claim| claim.certificate);
    TlsConfig {
        certificates,
        tls_hosts,
    }
}

fn load_secret(
    store: &Store,
    secret_key: &ObjectKey,
    provider: &CryptoProvider,
) -> Result<Arc<TlsCertificate>, SecretError> {
    let secret = store
        .secrets
        .get(secret_key)
        .ok_or_else(|| SecretError::NotFound {
            secret: secret_key.clone(),
        })?;
    let key = load_certificate(secret_key, secret, provider)?;
    Ok(Arc::new(TlsCertificate {
        secret: secret_key.clone(),
        key: Arc::new(key),
    }))
}

fn claim_host(
    claims: &mut HashMap<HostName, Claim>,
    host: HostName,
    ingress: &ObjectKey,
    certificate: &Arc<TlsCertificate>,
    field: &str,
    problems: &mut Problems,
) {
    match claims.entry(host) {
        Entry::Vacant(entry) => {
            entry.insert(Claim {
                ingress: ingress.clone(),
                certificate: certificate.clone(),
            });
        }
        Entry::Occupied(entry) => {
            let winner = entry.get();
            if winner.certificate.secret != certificate.secret {
                problems.ingress_error(
                    ingress,
                    field,
                    "CertificateConflict",
                    format!(
                        "host `{}` already gets its certificate from Secret `{}` of Ingress \
                         `{}`, which takes precedence (older Ingresses and earlier entries \
                         first), so Secret `{}` is not used for it; name the same Secret in \
                         both entries or remove the host from one",
                        entry.key(),
                        winner.certificate.secret,
                        winner.ingress,
                        certificate.secret,
                    ),
                );
            }
        }
    }
}

fn claim_fallback(
    fallback: &mut Option<Claim>,
    ingress: &ObjectKey,
    certificate: &Arc<TlsCertificate>,
    field: &str,
    problems: &mut Problems,
) {
    match fallback {
        None => {
            *fallback = Some(Claim {
                ingress: ingress.clone(),
                certificate: certificate.clone(),
            });
        }
        Some(winner) if winner.certificate.secret != certificate.secret => {
            problems.ingress_error(
                ingress,
                field,
                "CertificateConflict",
                format!(
                    "the fallback certificate for TLS connections that match no host already \
                     comes from Secret `{}` of Ingress `{}`, which takes precedence (older \
                     Ingresses and earlier entries first), so Secret `{}` is not used; list \
                     hosts in this `spec.tls` entry or remove it",
                    winner.certificate.secret, winner.ingress, certificate.secret,
                ),
            );
        }
        Some(_) => {}
    }
}
