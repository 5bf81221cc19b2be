//! TLS: certificate selection by SNI (exact, wildcard, default), the redirect from HTTP to
//! HTTPS with the public port, the `gangway.dev/ssl-redirect` annotation, and the cipher
//! suite chosen by the client's preference for ChaCha20.

use crate::support::backends::{TestServer, echo_services};
use crate::support::clients::{CurlReply, Http1Client, REQUEST_TIMEOUT, curl};
use crate::support::gangway::Gangway;
use crate::support::manifests::{INGRESS_CLASS, tls_secret};
use crate::support::tls::{
    ALPN_HTTP1, Leaf, TestCa, connect, inspecting_client_config, is_gangway_default,
    presented_certificate,
};

const SITES: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: sites}
spec:
  ingressClassName: gangway
  tls:
  - {hosts: [secure.test], secretName: secure-tls}
  - {hosts: ['*.wild.test'], secretName: wild-tls}
  rules:
  - host: secure.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {name: http}}}}
  - host: '*.wild.test'
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {name: http}}}}
  - host: plain.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {name: http}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: open
  annotations: {gangway.dev/ssl-redirect: 'false'}
spec:
  ingressClassName: gangway
  tls:
  - {hosts: [open.test], secretName: open-tls}
  rules:
  - host: open.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {name: http}}}}
";

/// Gangway serving `SITES` with certificates from one test CA.
struct Sites {
    gangway: Gangway,
    ca: TestCa,
    secure: Leaf,
    wild: Leaf,
    open: Leaf,
    /// Keeps the echo backend running.
    _servers: Vec<TestServer>,
}

async fn start_sites(flags: &[&str]) -> Sites {
    let ca = TestCa::new();
    let secure = ca.issue(&["secure.test"]);
    let wild = ca.issue(&["*.wild.test"]);
    let open = ca.issue(&["open.test"]);
    let (servers, services) = echo_services(&["app"]).await;
    let secrets = [
        tls_secret("secure-tls", &secure),
        tls_secret("wild-tls", &wild),
        tls_secret("open-tls", &open),
    ]
    .join("---\n");
    let gangway = Gangway::start_with(
        &[
            ("class.yaml", INGRESS_CLASS),
            ("services.yaml", &services),
            ("secrets.yaml", &secrets),
            ("sites.yaml", SITES),
        ],
        flags,
    )
    .await;
    Sites {
        gangway,
        ca,
        secure,
        wild,
        open,
        _servers: servers,
    }
}

/// Runs curl for `url` on `host`, resolving the host to the listener on `port`.
async fn curl_host(
    host: &str,
    port: u16,
    url_path: &str,
    scheme: &str,
    extra: &[&str],
) -> CurlReply {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("{scheme}://{host}:{port}{url_path}");
    let mut arguments = vec!["--resolve", resolve.as_str()];
    arguments.extend_from_slice(extra);
    arguments.push(&url);
    curl(&arguments).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_certificate() {
    let sites = start_sites(&[]).await;
    let https = sites.gangway.https;

    // Names with a certificate: the client verifies the chain and the name against the CA.
    for (server_name, leaf) in [
        ("secure.test", &sites.secure),
        ("api.wild.test", &sites.wild),
        ("OTHER.wild.test", &sites.wild),
    ] {
        let stream = connect(
            https,
            Some(server_name),
            sites.ca.client_config(&[ALPN_HTTP1]),
        )
        .await
        .unwrap_or_else(|error| panic!("{server_name}: {error}"));
        assert_eq!(
            presented_certificate(&stream),
            leaf.certificate_der,
            "certificate for {server_name}"
        );
        let mut client = Http1Client::handshake(stream).await.unwrap();
        let reply = client.get(server_name, "/").await.unwrap();
        assert_eq!(reply.outcome(), "app", "{server_name}");
    }

    // Names without one get the generated default certificate, which the CA did not sign.
    for server_name in [
        Some("a.b.wild.test"),
        Some("unknown.test"),
        Some("plain.test"),
        None,
    ] {
        let stream = connect(https, server_name, inspecting_client_config(&[ALPN_HTTP1]))
            .await
            .unwrap();
        assert!(
            is_gangway_default(&presented_certificate(&stream)),
            "{server_name:?} did not get the default certificate"
        );
    }
    let verified = connect(
        https,
        Some("unknown.test"),
        sites.ca.client_config(&[ALPN_HTTP1]),
    )
    .await;
    assert!(verified.is_err(), "the default certificate must not verify");

    // curl verifies the same way.
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), sites.ca.pem()).unwrap();
    let ca_path = ca_file.path().to_str().unwrap();
    for host in ["secure.test", "www.wild.test"] {
        let reply = curl_host(host, https.port(), "/", "https", &["--cacert", ca_path]).await;
        assert_eq!(reply.status, 200, "{host}");
        assert_eq!(reply.json()["backend"], "app");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_redirects_to_https_public_port() {
    let sites = start_sites(&["--https-public-port", "8443"]).await;
    let http_port = sites.gangway.http.port();

    // (host, expected Location) for hosts listed in a TLS section.
    let cases = [
        ("secure.test", "https://secure.test:8443/docs?page=2"),
        ("api.wild.test", "https://api.wild.test:8443/docs?page=2"),
    ];
    for (host, location) in cases {
        let reply = curl_host(host, http_port, "/docs?page=2", "http", &[]).await;
        assert_eq!(reply.status, 308, "{host}");
        assert_eq!(reply.header("location"), Some(location), "{host}");
    }

    // A host without TLS is served over HTTP.
    let reply = curl_host("plain.test", http_port, "/", "http", &[]).await;
    assert_eq!(reply.status, 200);

    // The same host over HTTPS is served, not redirected.
    let reply = curl_host(
        "secure.test",
        sites.gangway.https.port(),
        "/",
        "https",
        &["--insecure"],
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_omits_default_https_port() {
    let sites = start_sites(&[]).await;

    let reply = curl_host("secure.test", sites.gangway.http.port(), "/a", "http", &[]).await;

    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("location"), Some("https://secure.test/a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_redirect_annotation_turns_redirect_off() {
    let sites = start_sites(&[]).await;

    let reply = curl_host("open.test", sites.gangway.http.port(), "/", "http", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["headers"]["x-forwarded-proto"], "http");

    // HTTPS still serves its own certificate.
    let stream = connect(
        sites.gangway.https,
        Some("open.test"),
        sites.ca.client_config(&[ALPN_HTTP1]),
    )
    .await
    .unwrap();
    assert_eq!(presented_certificate(&stream), sites.open.certificate_der);

    let routes = sites.gangway.routes().await;
    let open_route = routes["virtualHosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|host| host["host"] == "open.test")
        .expect("no virtual host open.test");
    assert_eq!(open_route["routes"][0]["httpsRedirect"], false);
}

/// What `openssl s_client` reported for one connection.
struct OpensslHandshake {
    /// `New` for a full handshake, `Reused` for a resumed session.
    kind: String,
    /// The negotiated cipher suite, such as `TLS_AES_128_GCM_SHA256`.
    cipher: String,
}

/// Sends one request with `openssl s_client` to `host` on `port`, offering the TLS 1.3
/// suites in `suites` order. Saves the session to `session` after a full handshake, or
/// offers it for resumption when `resume` is set.
async fn openssl_request(
    host: &str,
    port: u16,
    suites: &str,
    session: &std::path::Path,
    resume: bool,
) -> OpensslHandshake {
    use tokio::io::AsyncWriteExt;

    let connect = format!("127.0.0.1:{port}");
    let session_flag = if resume { "-sess_in" } else { "-sess_out" };
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-servername", host])
        .args(["-tls1_3", "-ciphersuites", suites, "-ign_eof"])
        .arg(session_flag)
        .arg(session)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("failed to run openssl");
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(request.as_bytes()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(REQUEST_TIMEOUT, child.wait_with_output())
        .await
        .expect("openssl s_client timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The summary line reads "New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256".
    let summary = stdout
        .lines()
        .find(|line| line.starts_with("New,") || line.starts_with("Reused,"))
        .unwrap_or_else(|| {
            panic!(
                "no handshake summary from openssl s_client: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert!(stdout.contains("HTTP/1.1 200"), "no 200 response: {stdout}");
    let kind = summary.split(',').next().unwrap_or_default().to_owned();
    let cipher = summary
        .rsplit_once("Cipher is ")
        .map(|(_, cipher)| cipher.trim().to_owned())
        .unwrap_or_default();
    OpensslHandshake { kind, cipher }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_follows_chacha20_preference() {
    let sites = start_sites(&[]).await;
    let port = sites.gangway.https.port();
    let aes_first = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";
    let chacha_first = "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";

    // (client order, suite the proxy picks): its own order unless ChaCha20 comes first.
    for (suites, expected) in [
        (aes_first, "TLS_AES_128_GCM_SHA256"),
        (chacha_first, "TLS_CHACHA20_POLY1305_SHA256"),
    ] {
        let session = tempfile::NamedTempFile::new().unwrap();
        let full = openssl_request("secure.test", port, suites, session.path(), false).await;
        assert_eq!(full.kind, "New", "{suites}");
        assert_eq!(full.cipher, expected, "{suites}");

        let resumed = openssl_request("secure.test", port, suites, session.path(), true).await;
        assert_eq!(resumed.kind, "Reused", "{suites}");
        assert_eq!(resumed.cipher, expected, "{suites}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resumes_after_many_clients() {
    let sites = start_sites(&[]).await;
    let https = sites.gangway.https;
    let suites = "TLS_AES_128_GCM_SHA256";
    let session = tempfile::NamedTempFile::new().unwrap();
    let first = openssl_request("secure.test", https.port(), suites, session.path(), false).await;
    assert_eq!(first.kind, "New");

    // More clients than a server-side cache of 256 sessions, two per connection, can hold.
    for _ in 0..300 {
        let stream = connect(
            https,
            Some("open.test"),
            inspecting_client_config(&[ALPN_HTTP1]),
        )
        .await
        .unwrap();
        let mut client = Http1Client::handshake(stream).await.unwrap();
        // Reading a response takes in the session tickets sent after the handshake.
        client.get("open.test", "/").await.unwrap();
    }

    let resumed = openssl_request("secure.test", https.port(), suites, session.path(), true).await;
    assert_eq!(resumed.kind, "Reused");
}
