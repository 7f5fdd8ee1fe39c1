#!/usr/bin/env bash
# Installs and starts what nestform needs on a Debian 12 machine: the virtualization stack (QEMU 10 and
# libvirt 11 from bookworm-backports, matching the preinstalled qemu-utils), the libvirt headers the `virt`
# crate builds against, and the libvirt daemons. Safe to run again: every step checks before it acts.
#
# On a machine where libvirtd already runs (a user's workstation), it installs nothing it does not need and
# leaves the running daemon alone.
#
#   tests/setup-host.sh                 install, then start libvirtd as usual
#   tests/setup-host.sh --netns NAME    install, then create network namespace NAME and start the daemons
#                                       inside it, so every bridge, NAT rule and dnsmasq that guests' networks
#                                       need lives there (what the test suite does); undo with --stop-netns NAME
set -euo pipefail

netns=""
case "${1:-}" in
  --netns) netns="${2:?--netns needs a name}" ;;
  --stop-netns)
    ns="${2:?--stop-netns needs a name}"
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    rm -f /var/run/libvirt/libvirt-sock /var/run/libvirtd.pid
    exit 0
    ;;
  "") ;;
  *) echo "usage: $0 [--netns NAME | --stop-netns NAME]" >&2; exit 2 ;;
esac

log() { printf 'setup-host: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (try: sudo $0)"
  exit 1
fi

packages=(
  qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  libvirt-daemon-config-network libvirt-daemon-driver-storage dnsmasq-base iptables pkg-config
  iproute2
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  # qemu-utils 10 comes from bookworm-backports; the rest of the stack has to come from there too or apt
  # reports a conflict. Edit the existing Suites line rather than writing a new source.
  src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ] && ! grep -q 'bookworm-backports' "$src"; then
    log "adding bookworm-backports to $src"
    sed -i '0,/^Suites: bookworm bookworm-updates$/s//Suites: bookworm bookworm-updates bookworm-backports/' "$src"
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o Dpkg::Use-Pty=0 -t bookworm-backports "${missing[@]}" >/dev/null
fi

# Without udev, /dev/kvm stays root:root 0600; libvirt then finds KVM unusable for the qemu user and
# re-probes QEMU on every call (30-50 s per define). Debian's udev rule would make it root:kvm 0660.
if [ -e /dev/kvm ]; then
  getent group kvm >/dev/null || groupadd -r kvm
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

# Runs a command in the namespace when one was asked for.
in_ns() {
  if [ -n "$netns" ]; then ip netns exec "$netns" "$@"; else "$@"; fi
}

if [ -n "$netns" ]; then
  if ! ip netns list | grep -qw "$netns"; then
    log "creating network namespace $netns"
    ip netns add "$netns"
  fi
  ip netns exec "$netns" ip link set lo up
  if pid=$(pgrep -x libvirtd); then
    if [ "$(ip netns identify "$pid" 2>/dev/null)" = "$netns" ]; then
      log "libvirtd already runs in $netns"
      exit 0
    fi
    log "libvirtd (pid $pid) already runs outside network namespace $netns; stop it first (pkill -x libvirtd)"
    exit 1
  fi
elif virsh -c qemu:///system version >/dev/null 2>&1; then
  log "libvirtd already answers; leaving it as it is"
  exit 0
fi

pgrep -x virtlogd >/dev/null || in_ns virtlogd -d
pgrep -x libvirtd >/dev/null || in_ns libvirtd -d
for _ in $(seq 1 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && { log "libvirtd is up${netns:+ in network namespace $netns}"; exit 0; }
  sleep 0.2
done
log "libvirtd did not answer within 10 s; see /var/log/libvirt/libvirtd.log"
exit 1
