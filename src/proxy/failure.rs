//! Failed requests: each failure is classified once by side and kind, and one function maps
//! the kind to the response the client gets.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use http::StatusCode;

/// The side of the proxy where a failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    /// The client, or a request that matches nothing.
    Downstream,
    /// The backend or its endpoints.
    Upstream,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
        }
    }
}

/// Kind of failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FailureKind {
    /// No virtual host or path matches the request.
    NoRoute,
    /// A redirect to HTTPS was due, but the request names no valid host to redirect to.
    InvalidHost,
    /// The method cannot be proxied, such as `CONNECT`.
    MethodNotAllowed,
    /// The client's request body failed while it was sent upstream.
    RequestBodyFailed,
    /// The route's backend has no endpoint that can serve.
    NoEndpoint,
    /// The endpoint refused or reset the TCP connection.
    ConnectRefused,
    /// The endpoint did not accept the connection within `upstream_connect_timeout`.
    ConnectTimeout,
    /// The TLS or HTTP/2 handshake with the endpoint failed.
    HandshakeFailed,
    /// The connection closed or reset before the response head arrived.
    ConnectionReset,
    /// The endpoint sent something that is not a valid HTTP response.
    ProtocolError,
    /// The response head did not arrive within `upstream_response_timeout`.
    ResponseTimeout,
}

impl FailureKind {
    /// Returns the side the failure belongs to.
    pub(super) fn side(self) -> Side {
        match self {
            FailureKind::NoRoute
            | FailureKind::InvalidHost
            | FailureKind::MethodNotAllowed
            | FailureKind::RequestBodyFailed => Side::Downstream,
            FailureKind::NoEndpoint
            | FailureKind::ConnectRefused
            | FailureKind::ConnectTimeout
            | FailureKind::HandshakeFailed
            | FailureKind::ConnectionReset
            | FailureKind::ProtocolError
            | FailureKind::ResponseTimeout => Side::Upstream,
        }
    }

    /// Returns the kebab-case code sent in `x-gangway-error` and logged as `kind`.
    pub(super) fn code(self) -> &'static str {
        match self {
            FailureKind::NoRoute => "no-route",
            FailureKind::InvalidHost => "invalid-host",
            FailureKind::MethodNotAllowed => "method-not-allowed",
            FailureKind::RequestBodyFailed => "request-body-failed",
            FailureKind::NoEndpoint => "no-endpoint",
            FailureKind::ConnectRefused => "connect-refused",
            FailureKind::ConnectTimeout => "connect-timeout",
            FailureKind::HandshakeFailed => "handshake-failed",
            FailureKind::ConnectionReset => "connection-reset",
            FailureKind::ProtocolError => "protocol-error",
            FailureKind::ResponseTimeout => "response-timeout",
        }
    }
}

/// A classified failure with the error behind it, when there is one. Cloning shares the
/// error, so requests waiting on one upstream connect can all get its failure.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    /// Kind of failure.
    pub(super) kind: FailureKind,
    /// The underlying error, logged but never sent to the client.
    pub(super) source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl Failure {
    /// Builds a failure that has no underlying error.
    pub(super) fn new(kind: FailureKind) -> Self {
        Self { kind, source: None }
    }

    /// Builds a failure caused by `source`.
    pub(super) fn with_source(
        kind: FailureKind,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            source: Some(Arc::from(source.into())),
        }
    }

    /// Classifies an error from sending a request to an endpoint.
    pub(super) fn from_send_error(error: hyper::Error) -> Self {
        let kind = if error.is_user() && error.source().is_some() && !error.is_canceled() {
            // Only the request body is user code on this path, so the client failed.
            FailureKind::RequestBodyFailed
        } else if error.is_parse() || error.is_parse_status() || error.is_parse_too_large() {
            FailureKind::ProtocolError
        } else {
            FailureKind::ConnectionReset
        };
        Self::with_source(kind, error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failure: {}",
            self.kind.side().as_str(),
            self.kind.code()
        )?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
            let mut cause = source.source();
            while let Some(error) = cause {
                write!(f, ": {error}")?;
                cause = error.source();
            }
        }
        Ok(())
    }
}

/// The response the client gets for a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FailureResponse {
    /// Status code.
    pub(super) status: StatusCode,
    /// Close the downstream HTTP/1.1 connection after the response, because the request body
    /// may be unread or the client is misbehaving.
    pub(super) close: bool,
    /// Short body naming no internal detail.
    pub(super) body: &'static str,
}

/// Maps a failure to its response. Every failed request goes through this table.
pub(super) fn failure_response(kind: FailureKind) -> FailureResponse {
    let (status, close, body) = match kind {
        FailureKind::NoRoute => (StatusCode::NOT_FOUND, false, "no route for this request\n"),
        FailureKind::InvalidHost => (StatusCode::BAD_REQUEST, true, "invalid host\n"),
        FailureKind::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            false,
            "method not allowed\n",
        ),
        FailureKind::RequestBodyFailed => (StatusCode::BAD_REQUEST, true, "request body failed\n"),
        FailureKind::NoEndpoint => (
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            "no endpoint available\n",
        ),
        FailureKind::ConnectRefused
        | FailureKind::HandshakeFailed
        | FailureKind::ConnectionReset
        | FailureKind::ProtocolError => (StatusCode::BAD_GATEWAY, false, "bad gateway\n"),
        FailureKind::ConnectTimeout | FailureKind::ResponseTimeout => {
            (StatusCode::GATEWAY_TIMEOUT, false, "gateway timeout\n")
        }
    };
    FailureResponse {
        status,
        close,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn failure_response_table() {
        // (row name, kind, side, status, close)
        let rows = [
            (
                "a request that matches no route is not found",
                FailureKind::NoRoute,
                Side::Downstream,
                404,
                false,
            ),
            (
                "a redirect without a valid host is a bad request that closes",
                FailureKind::InvalidHost,
                Side::Downstream,
                400,
                true,
            ),
            (
                "a CONNECT request is not allowed",
                FailureKind::MethodNotAllowed,
                Side::Downstream,
                405,
                false,
            ),
            (
                "a failed request body is a bad request that closes",
                FailureKind::RequestBodyFailed,
                Side::Downstream,
                400,
                true,
            ),
            (
                "a backend without endpoints is unavailable",
                FailureKind::NoEndpoint,
                Side::Upstream,
                503,
                false,
            ),
            (
                "a refused connection is a bad gateway",
                FailureKind::ConnectRefused,
                Side::Upstream,
                502,
                false,
            ),
            (
                "a failed handshake is a bad gateway",
                FailureKind::HandshakeFailed,
                Side::Upstream,
                502,
                false,
            ),
            (
                "a reset before the response head is a bad gateway",
                FailureKind::ConnectionReset,
                Side::Upstream,
                502,
                false,
            ),
            (
                "an invalid response is a bad gateway",
                FailureKind::ProtocolError,
                Side::Upstream,
                502,
                false,
            ),
            (
                "a slow connect is a gateway timeout",
                FailureKind::ConnectTimeout,
                Side::Upstream,
                504,
                false,
            ),
            (
                "a slow response head is a gateway timeout",
                FailureKind::ResponseTimeout,
                Side::Upstream,
                504,
                false,
            ),
        ];

        for (name, kind, side, status, close) in rows {
            let response = failure_response(kind);
            assert_eq!(kind.side(), side, "side: {name}");
            assert_eq!(response.status.as_u16(), status, "status: {name}");
            assert_eq!(response.close, close, "close: {name}");
            assert!(response.body.ends_with('\n'), "body: {name}");
        }
    }

    #[test]
    fn failure_display_names_side_kind_and_cause() {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");

        let failure = Failure::with_source(FailureKind::ConnectRefused, cause);

        assert_eq!(
            failure.to_string(),
            "upstream failure: connect-refused: refused"
        );
    }
}
