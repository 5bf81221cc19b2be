#!/usr/bin/env bash
# Benchmark Gangway against nginx, HAProxy and the upstream reached directly, on loopback.
#
# Usage: bench/run.sh [--quick] [driver options]
#   --quick        a few seconds per case and one run each. It fails only when something
#                  breaks: a server that does not start, a run with no request, failed
#                  requests.
#   Other options go to the driver (python3 -m benchdriver --help), for example
#   --cases http1_connections,churn or --targets nginx,gangway.
#
# Environment:
#   GANGWAY_BIN    use this gangway binary instead of building one with cargo --release
#   BENCH_NO_INSTALL=1   do not install missing tools with apt-get or cargo
#
# Full mode writes the results into docs/benchmarks.md; every mode writes bench/.work/.

set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/bench/.tools"
# oha is the load generator for every case: HTTP/1.1, HTTP/2 over TLS, fixed rate with
# latency correction, and a JSON summary.
oha_version="1.16.0"

quick=false
for argument in "$@"; do
    [[ "$argument" == "--quick" ]] && quick=true
done

log() { printf '%s\n' "bench: $*" >&2; }

install_packages() {
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v taskset >/dev/null || missing+=(util-linux)
    [[ ${#missing[@]} -eq 0 ]] && return
    if [[ "${BENCH_NO_INSTALL:-0}" == 1 ]]; then
        log "missing tools: ${missing[*]} (BENCH_NO_INSTALL=1 is set)"
        exit 1
    fi
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq
    # Debian starts a freshly installed nginx on port 80 unless policy-rc.d forbids it; the
    # benchmark starts its own servers, on 127.0.0.1 only.
    local policy=/usr/sbin/policy-rc.d created_policy=false
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        created_policy=true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    if $created_policy; then rm -f "$policy"; fi
}

install_oha() {
    if [[ -x "$tools/bin/oha" ]] && "$tools/bin/oha" --version | grep -q "$oha_version"; then
        return
    fi
    if [[ "${BENCH_NO_INSTALL:-0}" == 1 ]]; then
        log "oha $oha_version is not in $tools/bin (BENCH_NO_INSTALL=1 is set)"
        exit 1
    fi
    log "installing oha $oha_version into $tools with cargo install (several minutes)"
    cargo install --locked --quiet --version "$oha_version" --root "$tools" oha
}

build_gangway() {
    if [[ -n "${GANGWAY_BIN:-}" ]]; then
        printf '%s\n' "$GANGWAY_BIN"
        return
    fi
    # The compiler benchmarks (case 7) are built by `cargo bench`, which also rebuilds
    # target/release/gangway with the dev-dependencies' features (tokio's test-util among
    # them). So the binary measured in cases 1 to 6 is a copy taken right after this build.
    # Quick mode builds the benchmarks in the same cargo run instead, so that the
    # dependencies compile once. Its copy then carries those features, which is harmless
    # because quick mode measures no speed.
    local targets=(--bin gangway)
    $quick && targets+=(--benches)
    log "building gangway with cargo build --release ${targets[*]}"
    (cd "$repo" && cargo build --release --quiet "${targets[@]}" >&2)
    mkdir -p "$repo/bench/.work/bin"
    cp "$repo/target/release/gangway" "$repo/bench/.work/bin/gangway"
    printf '%s\n' "$repo/bench/.work/bin/gangway"
}

install_packages
install_oha
gangway="$(build_gangway)"

command_line="bench/run.sh${*:+ $*}"
docs=()
$quick || docs=(--docs "$repo/docs/benchmarks.md")

# The driver, the load generator and the upstream share the client CPU (1 by default); the
# driver starts the proxies on the proxy CPU (0).
cd "$repo"
client_cpus=1
[[ "$(nproc)" -lt 2 ]] && client_cpus=0
exec env PYTHONPATH="$repo/bench" taskset -c "$client_cpus" python3 -m benchdriver \
    --oha "$tools/bin/oha" --gangway "$gangway" --repo "$repo" --work "$repo/bench/.work" \
    --command "$command_line" "${docs[@]}" "$@"
