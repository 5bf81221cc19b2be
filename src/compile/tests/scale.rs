//! A large input: 10,000 Ingresses. The test checks the output and prints the compile time;
//! it asserts no duration, because unit tests run on shared, loaded machines. Besides the
//! wall-clock time it prints the time the thread spent on a CPU (Linux only), which a busy
//! machine inflates less.
//!
//! Run it in release, where the time means something:
//! `cargo test --release --lib compile::tests::scale -- --ignored --nocapture`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::store;
use crate::compile::{CompileOptions, compile};
use crate::snapshot::RouteLookup;

const INGRESSES: usize = 10_000;
/// Ingresses share hosts in groups of this size, so virtual hosts merge several Ingresses.
const INGRESSES_PER_HOST: usize = 4;

/// Builds the manifests: one Service with an EndpointSlice per Ingress, and Ingresses with
/// two paths each on a shared host.
fn manifests() -> String {
    let mut text = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: gangway}\n\
         spec: {controller: gangway.dev/ingress-controller}\n",
    );
    for index in 0..INGRESSES {
        let host = index / INGRESSES_PER_HOST;
        let octet_3 = index / 250;
        let octet_4 = index % 250 + 1;
        write!(
            text,
            "---
apiVersion: v1
kind: Service
metadata: {{name: svc-{index}, namespace: scale}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-{index}-1
  namespace: scale
  labels: {{kubernetes.io/service-name: svc-{index}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
- addresses: [10.{octet_3}.{octet_4}.1]
- addresses: [10.{octet_3}.{octet_4}.2]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ing-{index}, namespace: scale}}
spec:
  ingressClassName: gangway
  rules:
  - host: host-{host}.example.com
    http:
      paths:
      - {{path: /app-{index}, pathType: Prefix, backend: {{service: {{name: svc-{index}, port: {{name: http}}}}}}}}
      - {{path: /app-{index}/health, pathType: Exact, backend: {{service: {{name: svc-{index}, port: {{number: 80}}}}}}}}
"
        )
        .expect("writing to a String cannot fail");
    }
    text
}

/// Returns the time the current thread has spent on a CPU, from the first field of
/// `/proc/thread-self/schedstat` (nanoseconds), or `None` where that file does not exist.
/// NOTE: on the test machine the value moved in steps of about 4 ms, so it is coarse.
fn thread_cpu_time() -> Option<Duration> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanoseconds = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanoseconds))
}

#[test]
#[ignore = "slow in debug builds; run in release to see the compile time"]
fn ten_thousand_ingresses() {
    let store = store(&manifests());
    let options = CompileOptions::default();

    // The first compile also pays for page faults on fresh heap memory; the second reuses
    // it, as a long-running controller does.
    for round in ["first", "second"] {
        let cpu_before = thread_cpu_time();
        let started = Instant::now();
        let output = compile(&store, &options);
        let elapsed = started.elapsed();
        let cpu = thread_cpu_time()
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        println!(
            "{round} compile of {INGRESSES} Ingresses: {elapsed:?} wall time, {cpu:?} on a CPU"
        );
        drop(output);
    }
    let (snapshot, report) = compile(&store, &options);

    assert_eq!(report.problems, vec![]);
    assert_eq!(report.owned_ingresses.len(), INGRESSES);
    assert_eq!(snapshot.hosts.len(), INGRESSES / INGRESSES_PER_HOST);
    assert_eq!(snapshot.backends.len(), 2 * INGRESSES);
    let last = INGRESSES - 1;
    let host = format!("host-{}.example.com", last / INGRESSES_PER_HOST);
    let matched = match snapshot.lookup_route(Some(&host), &format!("/app-{last}/x")) {
        RouteLookup::Matched { route, .. } => route.id.to_string(),
        RouteLookup::NotFound => String::new(),
    };
    assert_eq!(matched, format!("ingress/scale/ing-{last}/rule/0/path/0"));
}
