//! The certificate each TLS handshake gets, chosen by SNI from the live snapshot.

use std::sync::Arc;

use rustls::CipherSuite;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::harness::{SnapshotBuilder, TestProxy, TlsClient, config_preferring};
use crate::proxy::generate_default_certificate;
use crate::snapshot::TlsCertificate;
use crate::store::ObjectKey;

fn certificate(secret: &str) -> Arc<TlsCertificate> {
    Arc::new(TlsCertificate {
        secret: ObjectKey::new("default", secret),
        key: generate_default_certificate().unwrap(),
    })
}

/// Starts a proxy with one certificate, for `foo.example.com`.
fn proxy_for_foo() -> TestProxy {
    TestProxy::start(
        SnapshotBuilder::default()
            .certificate("foo.example.com", certificate("tls"))
            .build(),
    )
}

fn leaf(certificate: &TlsCertificate) -> CertificateDer<'static> {
    certificate.key.cert[0].clone()
}

#[tokio::test]
async fn handshake_picks_certificate_by_sni() {
    let exact = certificate("foo-tls");
    let wildcard = certificate("wild-tls");
    let snapshot = SnapshotBuilder::default()
        .certificate("foo.example.com", exact.clone())
        .certificate("*.wild.example.com", wildcard.clone())
        .build();
    let proxy = TestProxy::start(snapshot);
    let default_leaf = proxy.default_certificate.cert[0].clone();
    let address = proxy.https_addr();

    // (server name, expected leaf); an IP address as server name sends no SNI.
    let cases = [
        ("foo.example.com", leaf(&exact)),
        ("api.wild.example.com", leaf(&wildcard)),
        ("a.b.wild.example.com", default_leaf.clone()),
        ("unknown.example.org", default_leaf.clone()),
        ("127.0.0.1", default_leaf.clone()),
    ];
    for (server_name, expected) in cases {
        let client = TlsClient::connect(address, server_name, &[b"http/1.1"]).await;

        assert!(
            client.peer_certificate() == expected,
            "wrong certificate for {server_name}"
        );
    }
}

#[tokio::test]
async fn new_snapshot_serves_new_certificate() {
    let old = certificate("old-tls");
    let new = certificate("new-tls");
    let proxy = TestProxy::start(
        SnapshotBuilder::default()
            .certificate("foo.example.com", old.clone())
            .build(),
    );
    let before = TlsClient::connect(proxy.https_addr(), "foo.example.com", &[]).await;

    proxy.publish(
        SnapshotBuilder::default()
            .certificate("foo.example.com", new.clone())
            .build(),
    );
    let after = TlsClient::connect(proxy.https_addr(), "foo.example.com", &[]).await;

    assert!(before.peer_certificate() == leaf(&old));
    assert!(after.peer_certificate() == leaf(&new));
}

#[tokio::test]
async fn proxy_order_picks_aes_128_gcm() {
    let proxy = proxy_for_foo();

    // rustls clients offer AES-256-GCM first.
    let client = TlsClient::connect(proxy.https_addr(), "foo.example.com", &[]).await;

    assert_eq!(client.cipher_suite(), CipherSuite::TLS13_AES_128_GCM_SHA256);
}

#[tokio::test]
async fn client_preferring_chacha20_gets_it() {
    let proxy = proxy_for_foo();

    let client = TlsClient::connect_preferring(
        proxy.https_addr(),
        "foo.example.com",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    )
    .await;

    assert_eq!(
        client.cipher_suite(),
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
    );
    // The other order is still the proxy's for the next client.
    let client = TlsClient::connect(proxy.https_addr(), "foo.example.com", &[]).await;
    assert_eq!(client.cipher_suite(), CipherSuite::TLS13_AES_128_GCM_SHA256);
}

#[tokio::test]
async fn sessions_resume_in_both_orders() {
    let proxy = proxy_for_foo();

    for first in [
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ] {
        // A rustls client resumes only with the certificate verifier that checked the
        // session, so both connections share one configuration.
        let config = config_preferring(first);
        let mut full =
            TlsClient::connect_with_config(proxy.https_addr(), "foo.example.com", config.clone())
                .await;
        // TLS 1.3 tickets arrive after the handshake, and reading the response takes them in.
        full.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: foo.example.com\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        full.stream.read_to_end(&mut response).await.unwrap();

        let resumed =
            TlsClient::connect_with_config(proxy.https_addr(), "foo.example.com", config).await;

        assert!(!full.resumed(), "{first:?}");
        assert!(resumed.resumed(), "{first:?}");
        assert_eq!(resumed.cipher_suite(), first);
    }
}
