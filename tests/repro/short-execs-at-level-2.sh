#!/usr/bin/env bash
# Reproduces the stall of a new connection to a promoted guest's libvirtd: a two-level lab (a lab
# guest promoted to a host, a lab guest inside it), then `nestform exec` at level 2 again and again,
# each a new process with a new connection through the tunnel. When one takes longer than 15 s, it
# looks at once (before nestform's recovery restarts libvirtd): gdb of the stalled nestform process,
# level 1's libvirtd threads, sockets, QEMU processes and capability cache, with a libvirt client
# debug log of every exec. Seen on 2026-12-04: a stall within 3 to 50 execs, always in
# `virConnectGetDomainCapabilities` (the facts probe), answered only when libvirtd was restarted.
#
# Usage, as root after `tests/setup-host.sh --netns nestform-test`, from the repository:
#   N=200 bash tests/repro/short-execs-at-level-2.sh /tmp/repro
# Everything it makes is destroyed on exit; what it found is in the output directory.
set -uo pipefail
out="${1:-/tmp/nestform-repro}"
nf="$(cd "$(dirname "$0")/../.." && pwd)/target/debug/nestform"
mkdir -p "$out/ws"
cat > "$out/ws/main.nf.hcl" <<'HCL'
kvm_host "l0" {
  uri = "qemu:///system"
}

nat_network "lan" {
  host = kvm_host.l0
  name = "rp-lan"
  cidr = "10.213.31.0/24"
}

nested_guest "guest1" {
  host   = kvm_host.l0
  name   = "rp-g1"
  vcpus  = 1
  memory = "1536MiB"
  network "eth0" {
    nat_network = nat_network.lan
  }
  lab {}
}

kvm_host "guest1" {
  guest  = nested_guest.guest1
  nested = true
}

nested_guest "guest2" {
  host   = kvm_host.guest1
  name   = "rp-g2"
  vcpus  = 1
  memory = "256MiB"
  lab {}
}
HCL
cd "$out/ws"
trap '"$nf" destroy -auto-approve > "$out/destroy.log" 2>&1' EXIT
"$nf" apply -auto-approve > "$out/apply.log" 2>&1 || { echo "apply failed: see $out/apply.log"; exit 1; }
look='p=$(cat /run/libvirtd.pid); echo "libvirtd $p"; for t in /proc/$p/task/*; do echo "$(cat $t/comm) $(cat $t/wchan)"; done | sort | uniq -c
echo "== QEMU processes"; ps -eo pid,etime,args | grep qemu-system | grep -v -e nestform-agent -e grep | cut -c1-300
echo "== capability cache"; ls -la --time-style=full-iso /var/cache/libvirt/qemu/capabilities/
echo "== clients"; virt-admin srv-clients-info libvirtd; virt-admin srv-clients-list libvirtd
echo "== sockets"; ss -xpn | grep -E "libvirtd|nestform-agent"
echo "== log"; tail -20 /var/log/libvirt/libvirtd.log
echo "== gdb"; gdb -p $p -batch -ex "thread apply all bt 20" 2>/dev/null | grep -E "^#|^Thread"'
for i in $(seq 1 "${N:-200}"); do
  start=$(date +%s.%N)
  LIBVIRT_LOG_FILTERS="1:rpc 1:remote 4:object 4:event" LIBVIRT_LOG_OUTPUTS="1:file:$out/libvirt-$i.log" \
    NESTFORM_LOG=warn,nestform_provider_promoted=debug,nestform_agent=debug NESTFORM_LOG_PATH="$out/exec-$i.log" \
    timeout 200 "$nf" exec nested_guest.guest2 -- true > /dev/null 2> "$out/exec-$i.err" &
  pid=$!
  for _ in $(seq 150); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  if kill -0 $pid 2>/dev/null; then
    echo "exec $i still running after 15 s: looking"
    stalled=$(pgrep -f "^$nf exec nested_guest.guest2" | head -1)
    timeout 60 gdb -p "$stalled" -batch -ex "thread apply all bt 30" > "$out/gdb-nestform.txt" 2>&1
    timeout 120 "$nf" exec nested_guest.guest1 -- sh -c "$look" > "$out/level1.txt" 2>&1
    wait $pid
    echo "exec $i exited $? after $(echo "$(date +%s.%N) - $start" | bc) s; see $out"
    exit 0
  fi
  wait $pid
  echo "exec $i exited $? after $(echo "$(date +%s.%N) - $start" | bc) s"
  rm -f "$out/libvirt-$i.log" "$out/exec-$i.log" "$out/exec-$i.err"
done
echo "no stall in ${N:-200} execs"
