#!/usr/bin/env bash
# The whole test suite, with all its set-up: installs the virtualization stack if needed, creates a
# network namespace and starts libvirtd inside it (so every network a test makes stays there), then
# runs formatting, the JSON Schemas' freshness, unit tests, the provider conformance suite and the CLI
# end to end. The namespace and its daemons are removed on exit, also when a test fails. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

netns="${NESTFORM_TEST_NETNS:-nestform-test}"
trap 'bash tests/setup-host.sh --stop-netns "$netns" || true' EXIT
bash tests/setup-host.sh --netns "$netns"
# Lab guests boot a kernel of their own: the host's, or Debian's generic one fetched (not installed).
bash tests/guest-kernel.sh
# The benchmark report's test renders the page in a real browser: Debian's headless Chromium.
if ! command -v chromium >/dev/null; then
  echo "tests/run.sh: installing chromium (the report test renders its page with it)"
  apt-get update -qq
  apt-get install -y -qq -o Dpkg::Use-Pty=0 chromium >/dev/null
fi
export NESTFORM_REQUIRE_CHROMIUM=1
# What the host's libvirt holds before the suite starts: its definitions outlive the daemon, so an
# earlier run that was killed shows here, and the tests then leave what they did not make alone.
for what in list pool-list net-list; do
  echo "tests/run.sh: virsh $what --all (before the suite):"
  virsh -c qemu:///system "$what" --all --name | sed '/^$/d; s/^/  /'
done

cargo fmt --all -- --check
cargo test --workspace --locked --no-fail-fast
# The libvirt provider's conformance suite against real QEMU (guests with disks, started and stopped).
NESTFORM_QEMU_URI=qemu:///system cargo test --locked -p nestform-provider-libvirt --test conformance -- --ignored
# One lab guest booted straight through the provider, printing boot-to-agent time, the exec round
# trip and file throughput over the channel.
cargo test --locked -p nestform-lab-boot --test boot -- --ignored --test-threads 1 --nocapture
# The nesting suite, applied for real and scaled down, printing its figures: the article's tower to
# guest3 (`examples/inception`: three levels, exec at each, a no-op re-plan, destroy).
cargo test --locked -p nestform --test e2e nesting:: -- --ignored --test-threads 1 --nocapture
# The fault suite's CI run: the OpenStack-style lab (one promoted guest, three sibling nodes on two
# networks inside it) built, used and destroyed three times in a row, the last time after its lab
# guest was powered off by hand; it fails when any run needed a recovery (a repeated step, a
# restarted libvirtd, a new connection after a lost answer). The fault suite's other tests (execs
# beside the tower, libvirtd and the agent killed) are run by hand; each says how.
cargo test --locked -p nestform --test e2e fault::a_two_level_lab -- --ignored --test-threads 1 --nocapture
