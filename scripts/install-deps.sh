#!/usr/bin/env bash
# Installs the system packages the test suite and benchmarks use: the real NBD
# clients and peers (libnbd tools, qemu, nbdkit, fio, nbd-client), the pieces
# of the ext4-over-nbdfuse stack, and the namespace tooling. Idempotent: it
# skips apt entirely when every package is already present.
set -euo pipefail
PKGS=(libnbd-bin python3-libnbd qemu-utils nbdkit fio nbd-client fuse3
      e2fsprogs xfsprogs util-linux iproute2 procps psmisc
      iputils-arping resource-agents libxml2-utils  # agent: GARP; ocf-tester + its xmllint
      nfs-ganesha nfs-ganesha-vfs libnfs-utils)      # tests/ha_nfs, bench/failover.sh
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
