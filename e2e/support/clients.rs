//! Clients that talk to the proxy: hyper over HTTP/1.1 and HTTP/2 (h2c or TLS), and `curl`.
//! Every wait is bounded by [`REQUEST_TIMEOUT`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::body::{Body, BoxError, empty};

/// Bound on one request, from connect to the end of the response body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on a change to the manifest directory showing in responses. The provider publishes
/// within milliseconds; the bound only keeps a failing test from hanging on a loaded machine.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A complete response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// HTTP version of the response.
    pub version: Version,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Trailers, when the response had any.
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// Reads the body and trailers of `response`.
    pub async fn read(response: Response<Incoming>) -> Result<Reply, BoxError> {
        let (head, body) = response.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok(Reply {
            status: head.status,
            version: head.version,
            headers: head.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }

    /// Returns the body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Parses the body as JSON, failing the test with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "response {} is not JSON ({error}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// Returns a response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Summarizes who responded: the echo backend's name for a 2xx echo reply, otherwise the
    /// status and the proxy's `x-gangway-error` code (`404 no-route`), or the status alone.
    /// Tables of expected outcomes compare against this one string.
    pub fn outcome(&self) -> String {
        if self.status.is_success()
            && let Ok(reply) = serde_json::from_slice::<serde_json::Value>(&self.body)
            && let Some(backend) = reply["backend"].as_str()
        {
            return backend.to_owned();
        }
        match self.header("x-gangway-error") {
            Some(code) => format!("{} {code}", self.status.as_u16()),
            None => self.status.as_u16().to_string(),
        }
    }
}

/// Builds an HTTP/1.1 request in origin form with a `Host` header.
pub fn request(method: &str, host: &str, path: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host)
        .body(body)
        .expect("invalid test request")
}

/// Sends a GET for `host` and `path` on a new HTTP/1.1 connection to `address`.
pub async fn get(address: SocketAddr, host: &str, path: &str) -> Reply {
    send(address, request("GET", host, path, empty())).await
}

/// Sends `request` on a new HTTP/1.1 connection to `address` and reads the whole response,
/// failing the test on any error or after [`REQUEST_TIMEOUT`].
pub async fn send(address: SocketAddr, request: Request<Body>) -> Reply {
    let description = format!("{} {} to {address}", request.method(), request.uri());
    let exchange = async {
        let mut client = Http1Client::connect(address).await?;
        client.send(request).await
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) => panic!("{description} failed: {error}"),
        Err(_) => panic!("{description} timed out after {REQUEST_TIMEOUT:?}"),
    }
}

/// Polls GET `host` `path` until its [`Reply::outcome`] equals `expected`, failing the test
/// with the last outcome after [`CHANGE_TIMEOUT`].
pub async fn wait_for_outcome(address: SocketAddr, host: &str, path: &str, expected: &str) {
    let started = Instant::now();
    loop {
        let outcome = get(address, host, path).await.outcome();
        if outcome == expected {
            return;
        }
        assert!(
            started.elapsed() < CHANGE_TIMEOUT,
            "{host}{path} still answers {outcome:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens a WebSocket to `path` on `address` with the `Host` header `host`, failing the test
/// when the handshake fails or takes longer than [`REQUEST_TIMEOUT`].
pub async fn websocket(
    address: SocketAddr,
    host: &str,
    path: &str,
) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
    let mut upgrade = format!("ws://{address}{path}")
        .into_client_request()
        .unwrap();
    upgrade
        .headers_mut()
        .insert(header::HOST, host.parse().unwrap());
    let handshake = tokio_tungstenite::connect_async(upgrade);
    let (socket, response) = tokio::time::timeout(REQUEST_TIMEOUT, handshake)
        .await
        .expect("the WebSocket handshake timed out")
        .expect("the WebSocket handshake failed");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket
}

/// One HTTP/1.1 connection, kept alive across requests.
pub struct Http1Client {
    sender: http1::SendRequest<Body>,
}

impl Http1Client {
    /// Connects to `address` over plain TCP.
    pub async fn connect(address: SocketAddr) -> Result<Self, BoxError> {
        let stream = TcpStream::connect(address).await?;
        Self::handshake(stream).await
    }

    /// Starts HTTP/1.1 on an open stream, such as a TLS connection.
    pub async fn handshake<I>(io: I) -> Result<Self, BoxError>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    /// Sends a GET for `host` and `path`.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Reply, BoxError> {
        self.send(request("GET", host, path, empty())).await
    }

    /// Sends `request` and reads the whole response.
    pub async fn send(&mut self, request: Request<Body>) -> Result<Reply, BoxError> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        Reply::read(response).await
    }

    /// Sends `request` and returns once the response head arrived, leaving the body to read.
    pub async fn send_streaming(
        &mut self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, BoxError> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(request).await?)
    }

    /// Returns true once the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// One HTTP/2 connection, multiplexing requests.
#[derive(Clone)]
pub struct Http2Client {
    sender: http2::SendRequest<Body>,
    scheme: &'static str,
}

impl Http2Client {
    /// Connects to `address` with cleartext HTTP/2 and prior knowledge (h2c).
    pub async fn connect_h2c(address: SocketAddr) -> Result<Self, BoxError> {
        let stream = TcpStream::connect(address).await?;
        Self::handshake(stream, "http").await
    }

    /// Starts HTTP/2 on an open stream; `scheme` is `https` for a TLS stream that negotiated
    /// ALPN h2.
    pub async fn handshake<I>(io: I, scheme: &'static str) -> Result<Self, BoxError>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
        tokio::spawn(connection);
        Ok(Self { sender, scheme })
    }

    /// Builds a request for `host` and `path`; HTTP/2 carries the host in `:authority`.
    pub fn request(&self, method: &str, host: &str, path: &str, body: Body) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(format!("{}://{host}{path}", self.scheme))
            .version(Version::HTTP_2)
            .body(body)
            .expect("invalid test request")
    }

    /// Sends a GET for `host` and `path`.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Reply, BoxError> {
        let request = self.request("GET", host, path, empty());
        self.send(request).await
    }

    /// Sends `request` and reads the whole response, trailers included.
    pub async fn send(&mut self, request: Request<Body>) -> Result<Reply, BoxError> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        Reply::read(response).await
    }

    /// Sends `request` and returns once the response head arrived, leaving the body to read.
    pub async fn send_streaming(
        &mut self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, BoxError> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(request).await?)
    }
}

/// What `curl` printed about one exchange.
#[derive(Debug)]
pub struct CurlReply {
    /// `%{http_code}`: the status, or 0 when no response arrived.
    pub status: u16,
    /// `%{http_version}`: `1.1` or `2`.
    pub http_version: String,
    /// Response headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl CurlReply {
    /// Returns the first value of a response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Parses the body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| {
            panic!(
                "curl response {} is not JSON ({error}): {}",
                self.status, self.body
            )
        })
    }
}

/// Runs `curl` with `arguments` (the URL among them), failing the test when curl fails.
pub async fn curl(arguments: &[&str]) -> CurlReply {
    let headers_file = tempfile::NamedTempFile::new().unwrap();
    let body_file = tempfile::NamedTempFile::new().unwrap();
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time"])
        .arg(REQUEST_TIMEOUT.as_secs().to_string())
        .arg("--dump-header")
        .arg(headers_file.path())
        .arg("--output")
        .arg(body_file.path())
        .args(["--write-out", "%{http_code} %{http_version}"])
        .args(arguments)
        .kill_on_drop(true)
        .output()
        .await
        .expect("failed to run curl");
    assert!(
        output.status.success(),
        "curl {arguments:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, http_version) = written
        .split_once(' ')
        .unwrap_or_else(|| panic!("unexpected curl --write-out output: {written}"));
    let headers = std::fs::read_to_string(headers_file.path())
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    CurlReply {
        status: status.parse().expect("curl printed no status code"),
        http_version: http_version.to_owned(),
        headers,
        body: std::fs::read_to_string(body_file.path()).unwrap(),
    }
}
