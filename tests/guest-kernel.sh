#!/usr/bin/env bash
# Provides a kernel and modules for nestform's lab guests (direct kernel boot, see `providers/lab-boot`), and
# busybox-static for their initramfs. Run as root; safe to run again: every step checks before it acts.
#
# When the running kernel has an image in /boot and its modules in /lib/modules, nothing is fetched. Otherwise
# Debian bookworm's generic kernel (linux-image-6.1.0-*-amd64: 9p, overlay, virtio and kvm all as modules) is
# downloaded and unpacked into a cache directory WITHOUT being installed, so the host's boot set-up is left
# alone. The cache is `$NESTFORM_KERNEL_DIR`, default /var/cache/nestform/kernel, laid out as
#   DIR/boot/vmlinuz-VERSION   DIR/lib/modules/VERSION/{modules.dep,...}
# which is where `nestform_lab_boot::LabKernel::find` looks.
#
# Prints two lines on stdout: `kernel=PATH` and `modules=PATH`.
set -euo pipefail

log() { printf 'guest-kernel: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (try: sudo $0)"
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_updated=no
apt_update_once() {
  if [ "$apt_updated" = no ]; then
    apt-get update -qq
    apt_updated=yes
  fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# busybox-static: the initramfs needs a busybox that runs without the guest's (absent) shared libraries.
# kmod: `depmod` builds modules.dep for the unpacked kernel.
need=()
installed busybox-static || need+=(busybox-static)
command -v depmod >/dev/null 2>&1 || need+=(kmod)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing: ${need[*]}"
  apt_update_once
  apt-get install -y -qq -o Dpkg::Use-Pty=0 "${need[@]}" >/dev/null
fi

# The running kernel is the first choice: nothing to fetch, and the guest matches the host.
running="$(uname -r)"
if [ -f "/boot/vmlinuz-$running" ] && [ -f "/lib/modules/$running/modules.dep" ]; then
  printf 'kernel=%s\nmodules=%s\n' "/boot/vmlinuz-$running" "/lib/modules/$running"
  exit 0
fi

dir="${NESTFORM_KERNEL_DIR:-/var/cache/nestform/kernel}"
mkdir -p "$dir"

# The exact package behind the `linux-image-amd64` meta package, e.g. linux-image-6.1.0-35-amd64. Only the
# 6.1 (bookworm) series: backports' newer kernels are not what the lab was checked with.
resolve() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n1
}
pkg="$(resolve)"
if [ -z "$pkg" ]; then
  apt_update_once
  pkg="$(resolve)"
fi
if [ -z "$pkg" ]; then
  log "cannot resolve linux-image-amd64 to a linux-image-6.1.0-*-amd64 package (is bookworm in the apt sources?)"
  exit 1
fi
version="${pkg#linux-image-}"
image="$dir/boot/vmlinuz-$version"
modules="$dir/lib/modules/$version"

if [ ! -f "$image" ] || [ ! -f "$modules/modules.dep" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  log "downloading $pkg"
  if ! (cd "$work" && apt-get download -qq "$pkg" >/dev/null 2>&1); then
    # The package index may be older than the mirror's pool.
    apt_update_once
    pkg="$(resolve)"
    version="${pkg#linux-image-}"
    image="$dir/boot/vmlinuz-$version"
    modules="$dir/lib/modules/$version"
    (cd "$work" && apt-get download -qq "$pkg" >/dev/null)
  fi
  deb="$(ls "$work"/*.deb)"
  log "unpacking $(basename "$deb") into $dir"
  # Unpack next to the cache and move into place, so an interrupted run never leaves a half kernel behind.
  mkdir -p "$work/root"
  dpkg-deb -x "$deb" "$work/root"
  depmod -b "$work/root" "$version"
  mkdir -p "$dir/boot" "$dir/lib/modules"
  rm -rf "$modules"
  mv "$work/root/lib/modules/$version" "$modules"
  mv "$work/root/boot/vmlinuz-$version" "$image"
  # Keep the configuration: it tells which options are built in when something goes wrong.
  [ -f "$work/root/boot/config-$version" ] && mv "$work/root/boot/config-$version" "$dir/boot/"
fi

printf 'kernel=%s\nmodules=%s\n' "$image" "$modules"
