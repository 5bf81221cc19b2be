//! Ingress rules: hosts and paths into virtual hosts and routes, and `spec.defaultBackend`
//! into default routes.

use std::collections::BTreeSet;
use std::sync::Arc;

use foldhash::HashMap;
use k8s_openapi::api::networking::v1::{HTTPIngressPath, IngressBackend, IngressRule};

use super::backend::{BackendField, Backends, PathPosition};
use super::problems::Problems;
use super::select::OwnedIngress;
use super::tls::TlsConfig;
use super::validate::{HostName, compile_path_match};
use crate::snapshot::{
    Backend, CertificateTable, HostTable, Route, RouteAction, Snapshot, VirtualHost,
};
use crate::store::ObjectKey;

/// Gangway's annotation that turns the HTTPS redirect off (`"false"`) or on (`"true"`, the
/// default) for the routes of one Ingress.
pub(crate) const SSL_REDIRECT_ANNOTATION: &str = "gangway.dev/ssl-redirect";
/// ingress-nginx's annotation with the same meaning, read so that Ingresses migrate as they
/// are. Gangway's annotation wins when both are set.
pub(crate) const NGINX_SSL_REDIRECT_ANNOTATION: &str = "nginx.ingress.kubernetes.io/ssl-redirect";

/// Host name of the catch-all virtual host.
const CATCH_ALL_HOST: &str = "*";

/// Virtual hosts being built, and the backends their routes forward to.
#[derive(Debug, Default)]
pub(crate) struct Routing {
    /// Named virtual hosts, by host.
    hosts: HashMap<HostName, VirtualHost>,
    /// Rules without a host and default backends.
    catch_all: Option<VirtualHost>,
    /// Backends of the routes in the tables, by id.
    backends: HashMap<Arc<str>, Arc<Backend>>,
}

impl Routing {
    fn ensure_host(&mut self, host: Option<&HostName>) -> &mut VirtualHost {
        match host {
            Some(host) => {
                // Look up before inserting, so that the common case clones no host name.
                if !self.hosts.contains_key(host) {
                    let virtual_host = VirtualHost {
                        hostname: host.as_str().to_owned(),
                        ..VirtualHost::default()
                    };
                    self.hosts.insert(host.clone(), virtual_host);
                }
                self.hosts
                    .get_mut(host)
                    .expect("the host was inserted above")
            }
            None => self.catch_all.get_or_insert_with(|| VirtualHost {
                hostname: CATCH_ALL_HOST.to_owned(),
                ..VirtualHost::default()
            }),
        }
    }

    fn record_backend(&mut self, route: &Route) {
        if let RouteAction::Forward(backend) = &route.action {
            self.backends
                .entry(backend.id.clone())
                .or_insert_with(|| backend.clone());
        }
    }

    /// Builds the snapshot from the routing and the certificate table.
    pub(crate) fn into_snapshot(self, certificates: CertificateTable) -> Snapshot {
        // Sorted by id, as `Snapshot::backends` promises; ids are unique.
        let mut backends: Vec<Arc<Backend>> = self.backends.into_values().collect();
        backends.sort_unstable_by(|a, b| a.id.cmp(&b.id));

        let mut hosts = HostTable::default();
        for (host, virtual_host) in self.hosts {
            // Keys are distinct hosts, so no insert can conflict.
            let _ = hosts.insert(host.as_str(), Arc::new(virtual_host));
        }
        Snapshot {
            generation: 0,
            hosts,
            catch_all: self.catch_all.map(Arc::new),
            certificates,
            backends,
        }
    }
}

/// Everything the routing pass reads and writes besides the Ingress itself.
pub(crate) struct RoutingContext<'c, 's> {
    /// Resolves backends and caches them.
    pub(crate) backends: &'c mut Backends<'s>,
    /// Hosts listed in TLS sections.
    pub(crate) tls: &'c TlsConfig,
    /// Problems found so far.
    pub(crate) problems: &'c mut Problems,
    /// The virtual hosts being built.
    pub(crate) routing: &'c mut Routing,
}

impl<'s> RoutingContext<'_, 's> {
    /// Adds the routes of one Ingress. Call in ownership order, oldest first: on a conflict
    /// the route already in place wins.
    pub(crate) fn compile_ingress(&mut self, owned: OwnedIngress<'s>) {
        let key = owned.key;
        let redirect_allowed = self.ssl_redirect_allowed(owned);
        let spec = owned.ingress.spec.as_ref();
        let rules = spec.and_then(|s| s.rules.as_deref()).unwrap_or_default();
        let default_backend = spec.and_then(|s| s.default_backend.as_ref());
        if rules.is_empty() && default_backend.is_none() {
            self.problems.ingress_error(
                key,
                "spec",
                "MissingRulesOrDefaultBackend",
                "the Ingress has neither `rules` nor `defaultBackend`, so it routes nothing; \
                 add at least one of them",
            );
            return;
        }

        // Named hosts this Ingress has rules for, each once.
        let mut rule_hosts: BTreeSet<HostName> = BTreeSet::new();
        for (rule_index, rule) in rules.iter().enumerate() {
            if let Some(host) = self.compile_rule(key, rule_index, rule, redirect_allowed) {
                rule_hosts.insert(host);
            }
        }

        if let Some(default_backend) = default_backend {
            self.compile_default_backend(key, default_backend, &rule_hosts, redirect_allowed);
        }
    }

    /// Adds the routes of one rule. Returns the rule's host, or `None` for a rule without a
    /// host or with an invalid one.
    fn compile_rule(
        &mut self,
        key: &'s ObjectKey,
        rule_index: usize,
        rule: &'s IngressRule,
        redirect_allowed: bool,
    ) -> Option<HostName> {
        let host = match rule.host.as_deref().filter(|h| !h.is_empty()) {
            None => None,
            Some(host) => match HostName::parse(host) {
                Ok(host) => Some(host),
                Err(error) => {
                    self.problems.ingress_error(
                        key,
                        format!("spec.rules[{rule_index}].host"),
                        "InvalidHost",
                        format!("host `{host}` is invalid: it {error}; the rule is skipped"),
                    );
                    return None;
                }
            },
        };
        // A rule without `http` still claims its host, so requests for it do not fall
        // through to the catch-all.
        self.routing.ensure_host(host.as_ref());
        let Some(http) = &rule.http else {
            return host;
        };
        if http.paths.is_empty() {
            self.problems.ingress_error(
                key,
                format!("spec.rules[{rule_index}].http.paths"),
                "MissingPaths",
                "`http.paths` is empty; list at least one path, or remove `http`",
            );
        }
        let https_redirect = redirect_allowed && host.as_ref().is_some_and(|h| self.tls.covers(h));
        for (path_index, path) in http.paths.iter().enumerate() {
            let position = PathPosition {
                rule: rule_index,
                path: path_index,
            };
            self.compile_path(key, host.as_ref(), position, path, https_redirect);
        }
        host
    }

    /// Adds the route of one `http.paths[]` entry at `position`, unless the path is invalid or
    /// an equivalent path on the same host is already routed.
    fn compile_path(
        &mut self,
        key: &'s ObjectKey,
        host: Option<&HostName>,
        position: PathPosition,
        path: &'s HTTPIngressPath,
        https_redirect: bool,
    ) {
        let path_match = match compile_path_match(&path.path_type, path.path.as_deref()) {
            Ok(path_match) => path_match,
            Err(error) => {
                self.problems.ingress_error(
                    key,
                    format!("{position}.{}", error.field()),
                    error.reason(),
                    format!("{error}; the path is skipped"),
                );
                return;
            }
        };
        let action = self.backends.compile_action(
            key,
            &path.backend,
            BackendField::Path(position),
            self.problems,
        );
        let route = Arc::new(Route {
            id: format!(
                "ingress/{}/{}/rule/{}/path/{}",
                key.namespace, key.name, position.rule, position.path
            )
            .into(),
            ingress: key.clone(),
            path_match: Some(path_match.clone()),
            action,
            https_redirect,
        });
        let virtual_host = self.routing.ensure_host(host);
        match virtual_host.paths.insert(&path_match, route.clone()) {
            Ok(()) => self.routing.record_backend(&route),
            Err(winner) => self.problems.ingress_error(
                key,
                format!("{position}.path"),
                "PathConflict",
                format!(
                    "{} path `{}` on host `{}` is already routed by `{}`, which takes \
                     precedence (older Ingresses first, then rule and path order); change the \
                     path or remove one of the two",
                    path_match.type_name(),
                    path_match.path(),
                    virtual_host.hostname,
                    winner.id,
                ),
            ),
        }
    }

    /// Makes `spec.defaultBackend` the default route of every host the Ingress has rules
    /// for, and of the catch-all, unless an older Ingress set it first.
    fn compile_default_backend(
        &mut self,
        key: &'s ObjectKey,
        backend: &'s IngressBackend,
        rule_hosts: &BTreeSet<HostName>,
        redirect_allowed: bool,
    ) {
        let action =
            self.backends
                .compile_action(key, backend, BackendField::Default, self.problems);
        let id: Arc<str> = format!("ingress/{}/{}/default-backend", key.namespace, key.name).into();
        let make_route = |https_redirect| {
            Arc::new(Route {
                id: id.clone(),
                ingress: key.clone(),
                path_match: None,
                action: action.clone(),
                https_redirect,
            })
        };
        // One route per redirect setting: TLS hosts redirect, other hosts and the catch-all
        // do not. Both share the id because they come from the same field.
        let plain = make_route(false);
        let mut redirecting: Option<Arc<Route>> = None;

        for host in rule_hosts {
            let route = if redirect_allowed && self.tls.covers(host) {
                redirecting.get_or_insert_with(|| make_route(true)).clone()
            } else {
                plain.clone()
            };
            self.set_default_route(key, Some(host), route);
        }
        self.set_default_route(key, None, plain);
    }

    fn set_default_route(&mut self, key: &ObjectKey, host: Option<&HostName>, route: Arc<Route>) {
        let virtual_host = self.routing.ensure_host(host);
        let Some(winner) = &virtual_host.default_route else {
            virtual_host.default_route = Some(route.clone());
            self.routing.record_backend(&route);
            return;
        };
        // Two Ingresses that send unmatched requests to the same backend do not conflict.
        if let (RouteAction::Forward(a), RouteAction::Forward(b)) = (&winner.action, &route.action)
            && Arc::ptr_eq(a, b)
        {
            return;
        }
        let scope = match host {
            Some(host) => format!("requests to host `{host}` that match no path"),
            None => "requests whose host matches no rule".to_owned(),
        };
        let message = format!(
            "defaultBackend is not used for {scope}, because `{}` of an older Ingress already \
             serves them; remove one of the two defaultBackends",
            winner.id
        );
        self.problems.ingress_error(
            key,
            "spec.defaultBackend",
            "DefaultBackendConflict",
            message,
        );
    }

    /// Reads the ssl-redirect annotations of an Ingress. Returns false when the Ingress turns
    /// the HTTPS redirect off.
    fn ssl_redirect_allowed(&mut self, owned: OwnedIngress<'_>) -> bool {
        let Some(annotations) = owned.ingress.metadata.annotations.as_ref() else {
            return true;
        };
        // Gangway's own annotation first, so it wins over the ingress-nginx one.
        for name in [SSL_REDIRECT_ANNOTATION, NGINX_SSL_REDIRECT_ANNOTATION] {
            let Some(value) = annotations.get(name) else {
                continue;
            };
            match value.as_str() {
                "true" => return true,
                "false" => return false,
                other => self.problems.ingress_warning(
                    owned.key,
                    format!("metadata.annotations[{name}]"),
                    "InvalidAnnotation",
                    format!(
                        "annotation `{name}` has value `{other}`, so it is ignored; use \
                         `\"true\"` or `\"false\"`"
                    ),
                ),
            }
        }
        true
    }
}
