//! End-to-end tests of Ingress v1 routing through the `gangway` binary in standalone mode.
//!
//! Each test writes manifests into a temporary directory, starts `gangway run --manifests` on
//! free loopback ports, starts its own backends on 127.0.0.1, and drives real clients
//! (hyper over HTTP/1.1 and HTTP/2, tokio-rustls, tokio-tungstenite and `curl`) through the
//! proxy. Every process and server a test starts stops when the test ends, pass or fail.

#[path = "../support/mod.rs"]
mod support;

mod backends;
mod bad_input;
mod downstream;
mod headers;
mod hpack;
mod live;
mod routing;
mod shutdown;
mod streaming;
mod tls;
