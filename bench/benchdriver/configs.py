"""Configuration text for the upstream, nginx, HAProxy and Gangway, generated from one list
of routed host names so that every proxy serves the same routes."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Host of the route every load test uses. Each proxy returns 404 for any other host that is
# not in its route list, so a poll of a new host shows when that route is live.
BENCH_HOST = "bench.example"

# Path of the 1 MiB body that the upstream serves.
LARGE_PATH = "/1m"
LARGE_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Ports:
    """Listening ports of one server on 127.0.0.1."""

    http: int
    https: int | None = None
    admin: int | None = None


UPSTREAM = Ports(http=18080, https=18440)
NGINX = Ports(http=18081, https=18441)
HAPROXY = Ports(http=18082, https=18442)
GANGWAY = Ports(http=18083, https=18443, admin=19083)
# The floor proxy of benchdriver.compare (bench/floor), plain HTTP/1.1 only.
FLOOR = Ports(http=18084)

# Connection limit of each server: the 10,000 idle connections of the memory case, plus the
# connections to the upstream, with room to spare. The driver raises the open file limit to
# the hard limit, which must be above this.
MAX_CONNECTIONS = 16000

# Idle keep-alive timeout on every side, longer than any case, so no proxy closes a
# connection in the middle of a measurement.
IDLE_TIMEOUT_SECONDS = 300


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """Create a self-signed ECDSA P-256 certificate for bench.example and *.bench.example.

    Every proxy serves this one certificate, so handshakes cost the same signature."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = directory / "tls.crt", directory / "tls.key"
    if not certificate.exists():
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", str(key), "-out", str(certificate), "-days", "30",
                "-subj", f"/CN={BENCH_HOST}",
                "-addext", f"subjectAltName=DNS:{BENCH_HOST},DNS:*.{BENCH_HOST}",
            ],
            check=True,
            capture_output=True,
        )
    return certificate, key


def upstream_nginx(work: Path, certificate: Path, key: Path) -> str:
    """Build the configuration of nginx as the upstream: 200 with a 3-byte body on every path, a 1 MiB static file on
    LARGE_PATH, plain HTTP/1.1 for the proxies and TLS with HTTP/2 for the direct case."""
    root = work / "upstream-root"
    root.mkdir(parents=True, exist_ok=True)
    large = root / LARGE_PATH.lstrip("/")
    if not large.exists() or large.stat().st_size != LARGE_BODY_BYTES:
        large.write_bytes(bytes(range(256)) * (LARGE_BODY_BYTES // 256))
    return _nginx_main(work, f"""
    server {{
        listen 127.0.0.1:{UPSTREAM.http} default_server backlog=4096;
        listen 127.0.0.1:{UPSTREAM.https} ssl http2 default_server backlog=4096;
        ssl_certificate {certificate};
        ssl_certificate_key {key};
        root {root};
        location = {LARGE_PATH} {{ }}
        location / {{ return 200 "ok\\n"; }}
    }}
""")


def proxy_nginx(work: Path, hosts: list[str], certificate: Path, key: Path) -> str:
    """Build the configuration of nginx as the proxy under test. Proxy settings follow
    ingress-nginx's defaults where they differ from nginx's: HTTP/1.1 with keep-alive
    upstream, response buffering off, and the request id and X-Forwarded-* headers that
    Gangway sets too, so every proxy does the same work per request."""
    names = " ".join(hosts)
    return _nginx_main(work, f"""
    upstream bench_upstream {{
        server 127.0.0.1:{UPSTREAM.http};
        keepalive 320;
        keepalive_requests 10000000;
        keepalive_timeout {IDLE_TIMEOUT_SECONDS}s;
    }}

    server {{
        listen 127.0.0.1:{NGINX.http} default_server backlog=4096;
        listen 127.0.0.1:{NGINX.https} ssl http2 default_server backlog=4096;
        ssl_certificate {certificate};
        ssl_certificate_key {key};
        return 404;
    }}

    server {{
        listen 127.0.0.1:{NGINX.http};
        listen 127.0.0.1:{NGINX.https} ssl http2;
        server_name {names};
        ssl_certificate {certificate};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Request-ID $request_id;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Forwarded-Proto $scheme;
            add_header X-Request-ID $request_id always;
            proxy_buffering off;
        }}
    }}
""")


def _nginx_main(work: Path, servers: str) -> str:
    # `user root` lets workers read the work directory whatever its mode. One worker
    # process, pinned by taskset, like the other proxies' single worker thread.
    return f"""
user root;
worker_processes 1;
daemon off;
master_process on;
pid {work}/nginx.pid;
error_log {work}/error.log warn;

events {{
    worker_connections {MAX_CONNECTIONS};
}}

http {{
    access_log off;
    server_tokens off;
    keepalive_timeout {IDLE_TIMEOUT_SECONDS}s;
    keepalive_requests 10000000;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
{servers}
}}
"""


def proxy_haproxy(work: Path, hosts: list[str], combined_pem: Path) -> str:
    """Build the configuration of HAProxy as the proxy under test. It runs in master-worker
    mode (-W), so SIGUSR2 reloads it. The stats socket passes the listening sockets to the
    new worker, which makes the reload seamless."""
    # HAProxy reads at most 64 words on a line, and lines that name one ACL add up (OR).
    acl_lines = "\n".join(
        f"    acl routed_host req.hdr(host),field(1,:),lower -m str {' '.join(hosts[i:i + 50])}"
        for i in range(0, len(hosts), 50)
    )
    return f"""
global
    nbthread 1
    maxconn {MAX_CONNECTIONS}
    # HAProxy reserves two descriptors per connection (client and server side) and by default
    # refuses to start when the open file limit is below that. With `http-reuse always` the
    # idle clients share a few server connections, so one descriptor per client is enough
    # here, and this lets HAProxy start under a hard limit that cannot be raised, such as a
    # container's.
    no strict-limits
    stats socket {work}/haproxy.sock mode 600 level admin expose-fd listeners
    pidfile {work}/haproxy.pid
    tune.ssl.default-dh-param 2048

defaults
    mode http
    timeout connect 5s
    timeout client {IDLE_TIMEOUT_SECONDS}s
    timeout server {IDLE_TIMEOUT_SECONDS}s
    timeout http-keep-alive {IDLE_TIMEOUT_SECONDS}s
    timeout http-request 60s
    maxconn {MAX_CONNECTIONS}
    http-reuse always

frontend bench
    bind 127.0.0.1:{HAPROXY.http} backlog 4096
    bind 127.0.0.1:{HAPROXY.https} ssl crt {combined_pem} alpn h2,http/1.1 backlog 4096
    # The port is cut from the Host header (HTTP/2 clients send host:port in :authority).
{acl_lines}
    # The request id and X-Forwarded-* headers that Gangway and ingress-nginx set.
    unique-id-format %[uuid()]
    http-request set-header X-Request-ID %[unique-id]
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-For %[src]
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Forwarded-Port %[dst_port]
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    http-request set-header X-Forwarded-Proto http unless {{ ssl_fc }}
    http-response set-header X-Request-ID %[unique-id]
    use_backend upstream if routed_host
    default_backend not_found

backend upstream
    server upstream 127.0.0.1:{UPSTREAM.http} maxconn {MAX_CONNECTIONS}

backend not_found
    http-request return status 404
"""


def gangway_base_manifests(certificate: Path, key: Path) -> list[dict]:
    """Build the IngressClass, the upstream Service with its EndpointSlice, and the TLS
    Secret."""
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": "gangway"},
            "spec": {"controller": "gangway.dev/ingress-controller"},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "upstream", "namespace": "bench"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": UPSTREAM.http}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "upstream-1",
                "namespace": "bench",
                "labels": {"kubernetes.io/service-name": "upstream"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": UPSTREAM.http}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bench-tls", "namespace": "bench"},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": certificate.read_text(), "tls.key": key.read_text()},
        },
    ]


def gangway_ingress(name: str, hosts: list[str], extra_paths: int = 0) -> dict:
    """Build one Ingress that routes `/` (and `extra_paths` more Exact paths) on each host to
    the upstream. It lists the hosts for TLS and turns the HTTP-to-HTTPS redirect off,
    because the other proxies serve the route on both listeners."""
    backend = {"service": {"name": "upstream", "port": {"name": "http"}}}
    paths = [{"path": "/", "pathType": "Prefix", "backend": backend}]
    paths += [
        {"path": f"/path-{index}", "pathType": "Exact", "backend": backend}
        for index in range(extra_paths)
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": name,
            "namespace": "bench",
            "annotations": {"gangway.dev/ssl-redirect": "false"},
        },
        "spec": {
            "ingressClassName": "gangway",
            "tls": [{"hosts": hosts, "secretName": "bench-tls"}],
            "rules": [{"host": host, "http": {"paths": paths}} for host in hosts],
        },
    }


def write_manifests(path: Path, objects: list[dict]) -> None:
    """Write objects as a `kind: List` in JSON (which is YAML), then rename it into place,
    so a watcher never reads a half-written file."""
    document = {"apiVersion": "v1", "kind": "List", "items": objects}
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=1))
    temporary.rename(path)
