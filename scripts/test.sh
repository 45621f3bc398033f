#!/usr/bin/env bash
# Runs the whole test suite: unit, integration, eBPF (real kernel) and end-to-end tests
# against real servers and clients. Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root "the test suite"
# clang-19/llvm-19/libbpf-dev: the freshness check rebuilds the committed eBPF object;
# nginx, curl, apache2-utils (ab), procps (pgrep), python3: real servers and clients.
apt_install clang-19 llvm-19 libbpf-dev nginx curl apache2-utils procps python3 ca-certificates
# Test binaries run one after another (each may load eBPF programs); tests inside one
# binary run in parallel.
cargo test --workspace --no-fail-fast "$@"
