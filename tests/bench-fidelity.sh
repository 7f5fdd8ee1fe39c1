#!/usr/bin/env bash
# Fidelity of nestform's benchmarks at level 0: the medians of its `shell_loop` and `sha256` on the
# controller (a `kvm_host` by a local URI) against the same commands timed by hyperfine. Prints both
# medians and their difference; exits 1 when one differs by more than 5%. Needs a built nestform
# (`cargo build --release`, or NESTFORM=path) and libvirtd (`tests/setup-host.sh`); installs hyperfine
# from Debian's packages when it is missing. Usage: tests/bench-fidelity.sh [ITERATIONS] [SIZE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
iterations="${1:-200000}"
size_mib="${2:-512}"
nestform="${NESTFORM:-target/release/nestform}"
runs=5

command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/main.nf.hcl" <<HCL
kvm_host "local" {
  uri = "qemu:///system"
}

benchmark "shell_loop" {
  kind       = "shell_loop"
  targets    = [kvm_host.local]
  iterations = $iterations
  repeat     = $runs
}

benchmark "sha256" {
  kind    = "sha256"
  targets = [kvm_host.local]
  size    = "${size_mib}MiB"
  repeat  = $runs
}
HCL
"$nestform" -chdir="$work" apply -auto-approve >/dev/null
"$nestform" -chdir="$work" report -json > "$work/report.json"
"$nestform" -chdir="$work" destroy -auto-approve >/dev/null

# The same commands nestform's runners run, timed by hyperfine (one warm-up each, as nestform's).
loop="i=0; while [ \$i -lt $iterations ]; do i=\$((i+1)); done"
file="$work/data"
head -c $((size_mib << 20)) /dev/urandom > "$file" && cat "$file" > /dev/null
hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/loop.json" -- "bash -c '$loop'" >/dev/null
hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/sha.json" -- "sha256sum $file" >/dev/null

status=0
compare() {
  local what="$1" ours="$2" theirs="$3"
  local diff
  diff="$(echo "$ours $theirs" | awk '{ printf "%.1f", ($1 - $2) / $2 * 100 }')"
  printf 'bench-fidelity: %-10s nestform %.4f s, hyperfine %.4f s, difference %s%%\n' "$what" "$ours" "$theirs" "$diff"
  if awk -v d="$diff" 'BEGIN { exit !(d > 5 || d < -5) }'; then status=1; fi
}
compare shell_loop "$(jq '.["benchmark.shell_loop"].results["kvm_host.local"].median' "$work/report.json")" \
  "$(jq '.results[0].median' "$work/loop.json")"
compare sha256 "$(jq '.["benchmark.sha256"].results["kvm_host.local"].median' "$work/report.json")" \
  "$(jq '.results[0].median' "$work/sha.json")"
exit $status
