# Shared by bench/run.sh and bench/pgo-build.sh: where the benchmark's tools live, and how
# the scripts install them when they are missing. Source it after setting `repo`.
# BENCH_NO_INSTALL=1 makes a missing tool an error instead of an install.

tools="$repo/bench/.tools"
# oha is the load generator for every case: HTTP/1.1, HTTP/2 over TLS, fixed rate with
# latency correction, and a JSON summary.
oha_version="1.16.0"

log() { printf '%s\n' "bench: $*" >&2; }

# Exits with `$1`, a message naming what is missing, when BENCH_NO_INSTALL=1 forbids installs.
require_install_allowed() {
    if [[ "${BENCH_NO_INSTALL:-0}" == 1 ]]; then
        log "$1 (BENCH_NO_INSTALL=1 is set)"
        exit 1
    fi
}

# Prints cargo's target directory for the repository, which CARGO_TARGET_DIR or a cargo
# configuration may move away from "$repo/target".
cargo_target_dir() {
    (cd "$repo" && cargo metadata --format-version 1 --no-deps) |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# The load generator and the upstream run on CPU 1 and the proxies on CPU 0, unless the
# machine has one CPU only.
client_cpus=1
[[ "$(nproc)" -lt 2 ]] && client_cpus=0

install_packages() {
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v taskset >/dev/null || missing+=(util-linux)
    [[ ${#missing[@]} -eq 0 ]] && return
    require_install_allowed "missing tools: ${missing[*]}"
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
    require_install_allowed "oha $oha_version is not in $tools/bin"
    log "installing oha $oha_version into $tools with cargo install (several minutes)"
    cargo install --locked --quiet --version "$oha_version" --root "$tools" oha
}

# cargo-pgo drives the profile-guided build (bench/pgo-build.sh). llvm-profdata, which merges
# the profiles, comes from rustup's llvm-tools component, so that it matches rustc's LLVM.
cargo_pgo_version="0.3.0"

install_pgo_tools() {
    if ! rustup component list --installed | grep -q '^llvm-tools'; then
        require_install_allowed "rustup's llvm-tools component is missing"
        log "adding rustup's llvm-tools component"
        if ! rustup component add llvm-tools >&2; then
            log "rustup could not add the llvm-tools component, whose llvm-profdata the PGO build needs"
            exit 1
        fi
    fi
    if [[ -x "$tools/bin/cargo-pgo" ]] && "$tools/bin/cargo-pgo" pgo --version | grep -q "$cargo_pgo_version"; then
        return
    fi
    require_install_allowed "cargo-pgo $cargo_pgo_version is not in $tools/bin"
    log "installing cargo-pgo $cargo_pgo_version into $tools with cargo install"
    cargo install --locked --quiet --version "$cargo_pgo_version" --root "$tools" cargo-pgo
}
