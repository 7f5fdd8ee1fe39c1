#!/usr/bin/env bash
# The whole test suite: formatting, the JSON Schemas' freshness, unit tests, the provider conformance
# suite on libvirt's test driver, and the CLI end to end against libvirtd. Expects tests/setup-host.sh to
# have run (the README's test command runs both).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo test --workspace --locked --no-fail-fast
