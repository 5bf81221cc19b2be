#!/usr/bin/env bash
# Benchmark Gangway against nginx, HAProxy and the upstream reached directly, on loopback.
#
# Usage: bench/run.sh [--quick] [--pgo] [driver options]
#   --quick        a few seconds per case and one run each. It fails only when something
#                  breaks: a server that does not start, a run with no request, failed
#                  requests.
#   --pgo          measure a build with profile-guided optimization, made by
#                  bench/pgo-build.sh, instead of a plain release build.
#   Other options go to the driver (python3 -m benchdriver --help), for example
#   --cases http1_connections,churn or --targets nginx,gangway.
#
# Environment:
#   GANGWAY_BIN    use this gangway binary instead of building one with cargo --release
#   BENCH_NO_INSTALL=1   do not install missing tools with apt-get or cargo
#
# Full mode writes the results into docs/benchmarks.md; every mode writes bench/.work/.

set -euo pipefail
# Without this, a failure inside $(...), such as a failed build, would not stop the script.
shopt -s inherit_errexit

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/bench/tools.sh"

quick=false pgo=false driver_args=()
for argument in "$@"; do
    case "$argument" in
        --quick) quick=true; driver_args+=("$argument") ;;
        --pgo) pgo=true ;;
        *) driver_args+=("$argument") ;;
    esac
done

if $pgo && [[ -n "${GANGWAY_BIN:-}" ]]; then
    log "--pgo builds the binary to measure, and GANGWAY_BIN names one: unset GANGWAY_BIN or drop --pgo"
    exit 2
fi

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
    local targets=(--bin gangway) built
    built="$(cargo_target_dir)/release/gangway"
    if $pgo; then
        # pgo-build.sh builds into target/<host triple>/release, so target/release/gangway
        # stays as it was.
        built="$("$repo/bench/pgo-build.sh")"
        targets=()
    fi
    $quick && targets+=(--benches)
    if ((${#targets[@]})); then
        log "building with cargo build --release ${targets[*]}"
        (cd "$repo" && cargo build --release --quiet "${targets[@]}" >&2)
    fi
    if [[ ! -x "$built" ]]; then
        log "the build left no gangway binary at $built"
        exit 1
    fi
    mkdir -p "$repo/bench/.work/bin"
    cp "$built" "$repo/bench/.work/bin/gangway"
    printf '%s\n' "$repo/bench/.work/bin/gangway"
}

install_packages
install_oha
gangway="$(build_gangway)"

command_line="bench/run.sh${*:+ $*}"
docs=()
$quick || docs=(--docs "$repo/docs/benchmarks.md")

# The driver, the load generator and the upstream share the client CPU (bench/tools.sh); the
# driver starts the proxies on the proxy CPU (0).
cd "$repo"
exec env PYTHONPATH="$repo/bench" taskset -c "$client_cpus" python3 -m benchdriver \
    --oha "$tools/bin/oha" --gangway "$gangway" --repo "$repo" --work "$repo/bench/.work" \
    --command "$command_line" "${docs[@]}" "${driver_args[@]}"
