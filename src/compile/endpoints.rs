//! Endpoints of a Service port, read from the EndpointSlices that carry the Service's
//! `kubernetes.io/service-name` label.

use std::net::{IpAddr, SocketAddr};

use foldhash::{HashMap, HashMapExt};
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointSlice};

use super::problems::Problems;
use super::validate::port_number;
use crate::snapshot::Endpoint;
use crate::status::Problem;
use crate::store::{ObjectKey, ObjectRef, Store};

/// Label that ties an EndpointSlice to its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Role of a slice endpoint in a backend, decided by the endpoint's conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndpointUse {
    /// Ready: used whenever it is listed.
    Ready,
    /// Not ready, but serving while terminating: used only when no endpoint is ready, so
    /// connections drain instead of failing during a rollout.
    Terminating,
    /// Neither: never used.
    Unused,
}

/// Classifies an endpoint by its conditions, as the EndpointSlice API defines them: `ready`
/// unset means ready, `serving` unset means the value of `ready`, and `terminating` unset
/// means not terminating.
pub(crate) fn endpoint_use(endpoint: &SliceEndpoint) -> EndpointUse {
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    if ready {
        EndpointUse::Ready
    } else if serving && terminating {
        EndpointUse::Terminating
    } else {
        EndpointUse::Unused
    }
}

/// EndpointSlices by the Service they belong to, built once per compile.
pub(crate) struct EndpointIndex<'a> {
    /// Slices by (namespace, Service name), in store order.
    slices: HashMap<(&'a str, &'a str), Vec<(&'a ObjectKey, &'a EndpointSlice)>>,
}

impl<'a> EndpointIndex<'a> {
    /// Indexes the EndpointSlices of `store`. A slice without the Service label belongs to no
    /// Service and is left out.
    pub(crate) fn new(store: &'a Store) -> Self {
        let mut slices: HashMap<_, Vec<_>> = HashMap::with_capacity(store.endpoint_slices.len());
        for (key, slice) in &store.endpoint_slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(SERVICE_NAME_LABEL));
            if let Some(service) = service {
                slices
                    .entry((key.namespace.as_str(), service.as_str()))
                    .or_default()
                    .push((key, slice.as_ref()));
            }
        }
        Self { slices }
    }

    /// Collects the endpoints of one Service port: ready ones if any, otherwise the ones
    /// serving while terminating. Each endpoint's address is its first one, because the
    /// EndpointSlice API defines no meaning for the others and kube-proxy ignores them.
    pub(crate) fn endpoints(
        &self,
        service: &ObjectKey,
        service_port: &ServicePort,
        problems: &mut Problems,
    ) -> Vec<Endpoint> {
        let port_name = service_port.name.as_deref().unwrap_or("");
        let slices = self
            .slices
            .get(&(service.namespace.as_str(), service.name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut ready = Vec::new();
        let mut terminating = Vec::new();
        for (slice_key, slice) in slices {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                problems.push(Problem::error(
                    ObjectRef::new("EndpointSlice", (*slice_key).clone()),
                    "addressType",
                    "UnsupportedAddressType",
                    format!(
                        "addressType `{}` is not supported; Gangway reads only IPv4 and IPv6 \
                         EndpointSlices, so this slice of Service `{}` is skipped",
                        slice.address_type, service.name
                    ),
                ));
                continue;
            }
            // A slice port matches the Service port by name; an unnamed port is "" or unset.
            let slice_port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == port_name)
                .and_then(|p| p.port)
                .and_then(port_number);
            let Some(slice_port) = slice_port else {
                continue;
            };
            for (index, endpoint) in slice.endpoints.iter().enumerate() {
                let (target, is_terminating) = match endpoint_use(endpoint) {
                    EndpointUse::Ready => (&mut ready, false),
                    EndpointUse::Terminating => (&mut terminating, true),
                    EndpointUse::Unused => continue,
                };
                let Some(address) = endpoint.addresses.first() else {
                    continue;
                };
                match address.parse::<IpAddr>() {
                    Ok(ip) => target.push(Endpoint {
                        address: SocketAddr::new(ip, slice_port),
                        terminating: is_terminating,
                    }),
                    Err(_) => problems.push(Problem::error(
                        ObjectRef::new("EndpointSlice", (*slice_key).clone()),
                        format!("endpoints[{index}].addresses[0]"),
                        "InvalidEndpointAddress",
                        format!("address `{address}` is not an IP address, so it is skipped"),
                    )),
                }
            }
        }
        let mut endpoints = if ready.is_empty() { terminating } else { ready };
        // Sorted and without duplicates: slices of one Service may overlap while the
        // EndpointSlice controller moves endpoints between them.
        endpoints.sort_unstable();
        endpoints.dedup();
        endpoints
    }
}
