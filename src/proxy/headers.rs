//! Header rewriting between the two sides: hop-by-hop removal, `X-Forwarded-*`, and the
//! request id.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Forwarded-For`.
pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`.
pub(super) const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Real-IP`.
pub(super) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Request-Id`, kept from the client when well formed and returned on the response.
pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Diagnostic header on responses that the proxy generates for a failure.
pub(super) const X_GANGWAY_ERROR: HeaderName = HeaderName::from_static("x-gangway-error");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Every header that [`remove_hop_by_hop`] may remove or rewrite. A `static`, not a `const`:
/// each use of a `const` array builds and drops its own copy of the eight names.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TRANSFER_ENCODING,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::UPGRADE,
];

/// Maximum length of an incoming request id that is kept. Longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 200;

/// Returns true when `headers` ask to upgrade the connection: `Connection` lists `upgrade`
/// and `Upgrade` is present, as RFC 9110 section 7.8 requires of an upgrade request.
pub(super) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_lists(headers, "upgrade")
}

/// Returns true when a `Connection` header lists `token`, in any case.
pub(super) fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers (RFC 9110 section 7.6.1): `Connection` and every header it
/// names, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Proxy-Authenticate`,
/// `Proxy-Authorization`, `TE` unless it lists `trailers`, and `Upgrade` unless
/// `upgrading`. When upgrading, `Connection: upgrade` is set again for the next hop.
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    // One pass over the names finds which hop-by-hop headers are present; most messages
    // carry none or only `Connection`. Removing a header that is absent still costs a hash
    // lookup, which showed up in the proxy's instruction profile.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(index) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << index;
        }
    }
    let has = |name: &HeaderName| {
        HOP_BY_HOP
            .iter()
            .position(|hop| hop == name)
            .is_some_and(|index| present & (1 << index) != 0)
    };
    if present == 0 && !upgrading {
        return;
    }

    if has(&header::CONNECTION) {
        // Other headers that `Connection` names. The usual tokens (`keep-alive`, `close`,
        // `upgrade`) allocate nothing here.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            // The common tokens first, without parsing them as header names.
            .filter(|item| {
                !item.is_empty()
                    && !item.eq_ignore_ascii_case("keep-alive")
                    && !item.eq_ignore_ascii_case("close")
                    && !item.eq_ignore_ascii_case("upgrade")
            })
            .filter_map(|item| HeaderName::from_bytes(item.as_bytes()).ok())
            // The fixed list is handled below, `TE` and `Upgrade` with their exceptions.
            .filter(|name| !HOP_BY_HOP.contains(name))
            .collect();
        for name in named {
            headers.remove(&name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        if has(&name) {
            headers.remove(name);
        }
    }

    // `TE: trailers` is end to end in practice: gRPC requires it to reach the server.
    if has(&header::TE) {
        let asks_for_trailers = headers
            .get_all(header::TE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|item| {
                let coding = item.split(';').next().unwrap_or_default();
                coding.trim().eq_ignore_ascii_case("trailers")
            });
        headers.remove(header::TE);
        if asks_for_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }

    if upgrading {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if has(&header::UPGRADE) {
        headers.remove(header::UPGRADE);
    }
}

/// Downstream facts that the `X-Forwarded-*` headers carry.
pub(super) struct ForwardedFor<'a> {
    /// The client's IP address, from the TCP connection, as a header value.
    pub(super) client_ip: &'a HeaderValue,
    /// `http` or `https`.
    pub(super) proto: &'static str,
    /// The host the client requested, as sent, when it sent one.
    pub(super) host: Option<&'a str>,
    /// The public port of the listener the request arrived on.
    pub(super) public_port: u16,
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host`, `-Port` and `X-Real-IP`.
///
/// Incoming values are replaced, not appended to: a client can write any `X-Forwarded-For`,
/// and the proxy is the first hop that Kubernetes controls (ingress-nginx's default too).
pub(super) fn set_forwarded(headers: &mut HeaderMap, forwarded: &ForwardedFor<'_>) {
    headers.insert(X_FORWARDED_FOR, forwarded.client_ip.clone());
    headers.insert(X_REAL_IP, forwarded.client_ip.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(forwarded.proto));
    headers.insert(X_FORWARDED_PORT, HeaderValue::from(forwarded.public_port));
    // The `Host` header's value is shared rather than copied when it is the host named.
    let host = forwarded.host.and_then(|host| {
        headers
            .get(header::HOST)
            .filter(|value| value.as_bytes() == host.as_bytes())
            .cloned()
            .or_else(|| HeaderValue::from_str(host).ok())
    });
    match host {
        Some(host) => headers.insert(X_FORWARDED_HOST, host),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

/// Returns `ip` as a header value, for `X-Forwarded-For` and `X-Real-IP`.
pub(super) fn ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value")
}

/// Returns the request id: the client's `X-Request-Id` when it is well formed (1 to 200
/// characters of letters, digits and `-_.:`), otherwise a new UUID v4.
///
/// The value is marked sensitive, so HPACK sends it, downstream and to HTTP/2 upstreams, as
/// a never-indexed literal (RFC 7541 section 6.2.3). A new id on every request would
/// otherwise evict reusable entries such as `content-type` from the connection's dynamic
/// table. HTTP/1.1 and the logs ignore the flag.
pub(super) fn request_id(headers: &HeaderMap) -> HeaderValue {
    let incoming = headers
        .get(X_REQUEST_ID)
        .filter(|value| is_well_formed_request_id(value.as_bytes()));
    let mut id = match incoming {
        Some(value) => value.clone(),
        None => {
            let mut buffer = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
            HeaderValue::from_str(id).expect("a UUID is a valid header value")
        }
    };
    id.set_sensitive(true);
    id
}

fn is_well_formed_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn names(map: &HeaderMap) -> Vec<String> {
        let mut names: Vec<String> = map.keys().map(|name| name.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn hop_by_hop_removed_with_named_headers() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-authenticate", "Basic"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("x-end-to-end", "kept"),
        ]);

        remove_hop_by_hop(&mut map, false);

        assert_eq!(names(&map), vec!["x-end-to-end"]);
    }

    #[test]
    fn each_hop_by_hop_header_alone_removed() {
        let cases = [
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "gzip"),
            ("upgrade", "websocket"),
        ];
        for (name, value) in cases {
            let mut map = headers(&[(name, value), ("x-end-to-end", "kept")]);

            remove_hop_by_hop(&mut map, false);

            assert_eq!(names(&map), vec!["x-end-to-end"], "{name} was not removed");
        }
    }

    #[test]
    fn connection_tokens_across_values_and_case() {
        let mut map = headers(&[
            ("connection", "close, ,KEEP-ALIVE"),
            ("connection", " X-Trace-Hop ,te"),
            ("x-trace-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-end-to-end", "kept"),
        ]);
        remove_hop_by_hop(&mut map, false);
        assert_eq!(names(&map), ["te", "x-end-to-end"]);
    }

    #[test]
    fn end_to_end_headers_untouched() {
        let mut map = headers(&[("accept", "*/*"), ("x-end-to-end", "kept")]);

        remove_hop_by_hop(&mut map, false);

        assert_eq!(names(&map), vec!["accept", "x-end-to-end"]);
        assert_eq!(map.get("x-end-to-end").unwrap(), "kept");
    }

    #[test]
    fn te_trailers_kept() {
        let mut map = headers(&[("te", "gzip, trailers;q=1"), ("connection", "te")]);

        remove_hop_by_hop(&mut map, false);

        assert_eq!(map.get(header::TE).unwrap(), "trailers");
        assert!(map.get(header::CONNECTION).is_none());
    }

    #[test]
    fn upgrade_kept_when_upgrading() {
        let mut map = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);

        assert!(is_upgrade_request(&map));
        remove_hop_by_hop(&mut map, true);

        assert_eq!(map.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(map.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn upgrade_needs_connection_token() {
        let map = headers(&[("connection", "keep-alive"), ("upgrade", "websocket")]);

        assert!(!is_upgrade_request(&map));
    }

    #[test]
    fn forwarded_headers_replace_client_values() {
        let mut map = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ]);
        let forwarded = ForwardedFor {
            client_ip: &ip_header("127.0.0.7".parse().unwrap()),
            proto: "http",
            host: Some("foo.example.com:8080"),
            public_port: 80,
        };

        set_forwarded(&mut map, &forwarded);

        assert_eq!(map.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(map.get(X_FORWARDED_FOR).unwrap(), "127.0.0.7");
        assert_eq!(map.get(X_REAL_IP).unwrap(), "127.0.0.7");
        assert_eq!(map.get(X_FORWARDED_PROTO).unwrap(), "http");
        assert_eq!(map.get(X_FORWARDED_HOST).unwrap(), "foo.example.com:8080");
        assert_eq!(map.get(X_FORWARDED_PORT).unwrap(), "80");
    }

    #[test]
    fn request_id_kept_when_well_formed() {
        let map = headers(&[("x-request-id", "abc-123_x.y:z")]);

        assert_eq!(request_id(&map), "abc-123_x.y:z");
    }

    #[test]
    fn request_id_marked_sensitive() {
        let generated = request_id(&HeaderMap::new());
        let passed_on = request_id(&headers(&[("x-request-id", "abc-123")]));

        assert!(generated.is_sensitive());
        assert!(passed_on.is_sensitive());
    }

    #[test]
    fn request_id_replaced_when_malformed() {
        let too_long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for incoming in ["", "has space", "semi;colon", too_long.as_str()] {
            let map = headers(&[("x-request-id", incoming)]);

            let id = request_id(&map);

            assert_ne!(id, incoming);
            let parsed = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "for {incoming:?}");
        }
    }
}
