#!/usr/bin/env bash
# Build gangway with profile-guided optimization (PGO), and print the binary's path.
#
# Usage: bench/pgo-build.sh
#
# Three steps, driven by cargo-pgo with rustc's own LLVM tools:
#   1. `cargo pgo build`: a release build that counts how often each function and branch runs.
#   2. The training load, `python3 -m benchdriver.train`: every proxy case of the benchmark
#      in quick mode, plus POST requests with a body, against that build, on loopback, with
#      nginx as the upstream. Each Gangway process writes its counts when it exits.
#   3. `cargo pgo optimize build`: the release build again, optimized with those counts.
# Code the training never runs is compiled as cold, so the binary favours the trained kinds
# of traffic (docs/benchmarks.md lists them). The linker keeps hot and cold code in
# separate sections (`-z keep-text-section-prefix`), so that the code a serving proxy runs
# sits on fewer pages.
#
# Takes two release builds (about 5 minutes each on 2 cores) and under a minute of training.
# Installs what is missing (bench/tools.sh): what bench/run.sh installs (nginx, HAProxy,
# openssl and util-linux from Debian, oha with cargo), cargo-pgo with cargo, and rustup's
# llvm-tools component. The first install of oha and cargo-pgo adds a few minutes.
# The binary is target/<host triple>/release/gangway; target/release/gangway is not touched.
# Only the binary's path goes to standard output; everything else goes to standard error.

set -euo pipefail
shopt -s inherit_errexit
# Keep standard output for the path: file descriptor 3 is the real one.
exec 3>&1 1>&2

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/bench/tools.sh"

install_packages
install_oha
install_pgo_tools

cd "$repo"
export PATH="$tools/bin:$PATH"
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-z,keep-text-section-prefix"
host="$(rustc -vV | sed -n 's/^host: //p')"
binary="$(cargo_target_dir)/$host/release/gangway"

log "PGO step 1 of 3: instrumented build (cargo pgo build)"
# cargo pgo build also empties target/pgo-profiles: counts from an earlier build would not
# match this one's code.
cargo pgo build -- --locked --bin gangway

log "PGO step 2 of 3: training load (python3 -m benchdriver.train)"
env PYTHONPATH="$repo/bench" taskset -c "$client_cpus" python3 -m benchdriver.train \
    --oha "$tools/bin/oha" --gangway "$binary" --work "$repo/bench/.work/train"

log "PGO step 3 of 3: optimized build (cargo pgo optimize build)"
cargo pgo optimize build -- --locked --bin gangway
printf '%s\n' "$binary" >&3
