//! The addresses Gangway publishes in `status.loadBalancer.ingress` of the Ingresses it owns.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::IngressLoadBalancerIngress;

/// One address through which clients reach Gangway.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PublishAddress {
    /// An IP address, written to `ip`.
    Ip(String),
    /// A DNS name, written to `hostname`.
    Hostname(String),
}

impl PublishAddress {
    /// Classifies a static address from the command line: a string that parses as an IP
    /// address becomes `ip`, anything else `hostname`, as ingress-nginx does with
    /// `--publish-status-address`.
    pub fn parse(address: &str) -> Self {
        match address.parse::<IpAddr>() {
            Ok(_) => Self::Ip(address.to_owned()),
            Err(_) => Self::Hostname(address.to_owned()),
        }
    }

    /// Reads one entry of an Ingress's `status.loadBalancer.ingress`. An entry with both
    /// fields counts as its IP address, and an entry with neither is ignored.
    pub fn from_status(entry: &IngressLoadBalancerIngress) -> Option<Self> {
        Self::from_fields(entry.ip.as_deref(), entry.hostname.as_deref())
    }

    /// Reads an `ip`/`hostname` pair, preferring the IP address; empty strings count as unset.
    fn from_fields(ip: Option<&str>, hostname: Option<&str>) -> Option<Self> {
        let non_empty = |value: Option<&str>| value.filter(|v| !v.is_empty()).map(str::to_owned);
        non_empty(ip)
            .map(Self::Ip)
            .or_else(|| non_empty(hostname).map(Self::Hostname))
    }

    /// Builds the status entry for this address. Ports are left out: Gangway listens on the
    /// standard HTTP and HTTPS ports of the published address.
    pub fn to_status(&self) -> IngressLoadBalancerIngress {
        match self {
            Self::Ip(ip) => IngressLoadBalancerIngress {
                ip: Some(ip.clone()),
                ..Default::default()
            },
            Self::Hostname(hostname) => IngressLoadBalancerIngress {
                hostname: Some(hostname.clone()),
                ..Default::default()
            },
        }
    }
}

/// Sorts addresses (IPs before host names, then by text) and drops repeats, so that the list
/// written to every Ingress is stable and comparisons do not depend on source order.
pub fn normalize(mut addresses: Vec<PublishAddress>) -> Vec<PublishAddress> {
    addresses.sort();
    addresses.dedup();
    addresses
}

/// Reads the addresses an Ingress's status contains, normalized.
pub fn from_ingress_status(entries: &[IngressLoadBalancerIngress]) -> Vec<PublishAddress> {
    normalize(
        entries
            .iter()
            .filter_map(PublishAddress::from_status)
            .collect(),
    )
}

/// Derives the published addresses from the Service in front of Gangway (`--publish-service`).
///
/// The rules follow ingress-nginx's `statusAddressFromService`, with one difference noted
/// below:
/// - `LoadBalancer`: every `status.loadBalancer.ingress` entry (its IP, else its host name),
///   plus each `spec.externalIPs` entry. Empty while the load balancer is being provisioned.
/// - `NodePort` and `ClusterIP`: `spec.externalIPs` when set, else `spec.clusterIP`.
///   ingress-nginx ignores `externalIPs` on a `ClusterIP` Service, but traffic sent to an
///   external IP reaches any Service type, so Gangway publishes them for both types.
///   A headless Service (`clusterIP: None`) gives no address.
/// - `ExternalName`: `spec.externalName` as a host name.
pub fn from_service(service: &Service) -> Vec<PublishAddress> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let external_ips = || {
        spec.external_ips
            .iter()
            .flatten()
            .filter(|ip| !ip.is_empty())
            .map(|ip| PublishAddress::Ip(ip.clone()))
    };

    let addresses: Vec<PublishAddress> = match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "LoadBalancer" => service
            .status
            .as_ref()
            .and_then(|status| status.load_balancer.as_ref())
            .and_then(|load_balancer| load_balancer.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                PublishAddress::from_fields(entry.ip.as_deref(), entry.hostname.as_deref())
            })
            .chain(external_ips())
            .collect(),
        "ExternalName" => spec
            .external_name
            .iter()
            .filter(|name| !name.is_empty())
            .map(|name| PublishAddress::Hostname(name.clone()))
            .collect(),
        // ClusterIP, NodePort, and any type a newer API server may add.
        _ => {
            let external: Vec<PublishAddress> = external_ips().collect();
            if external.is_empty() {
                spec.cluster_ip
                    .iter()
                    .filter(|ip| !ip.is_empty() && ip.as_str() != "None")
                    .map(|ip| PublishAddress::Ip(ip.clone()))
                    .collect()
            } else {
                external
            }
        }
    };
    normalize(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).expect("test Service is valid")
    }

    fn ip(address: &str) -> PublishAddress {
        PublishAddress::Ip(address.to_owned())
    }

    fn hostname(name: &str) -> PublishAddress {
        PublishAddress::Hostname(name.to_owned())
    }

    #[test]
    fn static_address_classification() {
        let cases = [
            ("an IPv4 address is an ip", "192.0.2.10", ip("192.0.2.10")),
            ("an IPv6 address is an ip", "2001:db8::1", ip("2001:db8::1")),
            (
                "a DNS name is a hostname",
                "lb.example.com",
                hostname("lb.example.com"),
            ),
            (
                "an address with a port is not an ip",
                "192.0.2.10:80",
                hostname("192.0.2.10:80"),
            ),
        ];
        for (name, input, expected) in cases {
            assert_eq!(PublishAddress::parse(input), expected, "{name}");
        }
    }

    #[test]
    fn load_balancer_service_addresses() {
        let svc = service(serde_json::json!({
            "metadata": {"name": "gangway", "namespace": "gangway-system"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.5", "externalIPs": ["198.51.100.7"]},
            "status": {"loadBalancer": {"ingress": [
                {"hostname": "lb.example.com"},
                {"ip": "203.0.113.9", "hostname": "ignored.example.com"},
                {}
            ]}}
        }));
        assert_eq!(
            from_service(&svc),
            vec![
                ip("198.51.100.7"),
                ip("203.0.113.9"),
                hostname("lb.example.com")
            ]
        );
    }

    #[test]
    fn pending_load_balancer_has_no_address() {
        let svc = service(serde_json::json!({
            "metadata": {"name": "gangway"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.5"}
        }));
        assert_eq!(from_service(&svc), Vec::<PublishAddress>::new());
    }

    #[test]
    fn cluster_ip_and_node_port_addresses() {
        let cases = [
            (
                "a ClusterIP Service publishes its cluster IP",
                serde_json::json!({"type": "ClusterIP", "clusterIP": "10.0.0.5"}),
                vec![ip("10.0.0.5")],
            ),
            (
                "a Service without a type is a ClusterIP Service",
                serde_json::json!({"clusterIP": "10.0.0.5"}),
                vec![ip("10.0.0.5")],
            ),
            (
                "external IPs replace the cluster IP",
                serde_json::json!({"type": "ClusterIP", "clusterIP": "10.0.0.5", "externalIPs": ["198.51.100.8", "198.51.100.7"]}),
                vec![ip("198.51.100.7"), ip("198.51.100.8")],
            ),
            (
                "a NodePort Service publishes its cluster IP",
                serde_json::json!({"type": "NodePort", "clusterIP": "10.0.0.6"}),
                vec![ip("10.0.0.6")],
            ),
            (
                "a headless Service has no address",
                serde_json::json!({"type": "ClusterIP", "clusterIP": "None"}),
                vec![],
            ),
            (
                "an ExternalName Service publishes its name",
                serde_json::json!({"type": "ExternalName", "externalName": "edge.example.com"}),
                vec![hostname("edge.example.com")],
            ),
        ];
        for (name, spec, expected) in cases {
            let svc = service(serde_json::json!({"metadata": {"name": "gangway"}, "spec": spec}));
            assert_eq!(from_service(&svc), expected, "{name}");
        }
    }

    #[test]
    fn status_entry_round_trip() {
        for address in [ip("192.0.2.1"), hostname("lb.example.com")] {
            assert_eq!(
                PublishAddress::from_status(&address.to_status()),
                Some(address.clone())
            );
        }
        assert_eq!(
            PublishAddress::from_status(&IngressLoadBalancerIngress::default()),
            None
        );
    }
}
