#!/usr/bin/env bash
# A newcomer's walk-through of one hadisk node on a file image, start to end:
# build, write the metadata, look at it, start the daemon, bring the resource
# up, promote it, write and read 64 MiB through the NBD export with libnbd's
# nbdcopy, show the status, stop cleanly, and show that the stop was clean.
#
# Everything lives in a fresh temporary directory that is removed at the end
# (also on error or Ctrl-C); the daemon is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nbdcopy >/dev/null 2>&1; then
    echo "nbdcopy (Debian package libnbd-bin) is needed; installing the test packages"
    ./scripts/install-deps.sh
fi
echo "== building hadisk (release)"
cargo build --release --locked -q -p hadisk
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/hadisk

work=$(mktemp -d /tmp/hadisk-try.XXXXXX)
daemon_pid=""
cleanup() {
    if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() {
    echo
    echo "\$ $*"
    "$@"
}

truncate -s 1G "$work/disk.img"
cat >"$work/data.res" <<EOF
# The seed's data.res, with file images for disks and loopback addresses.
resource data {
  startup { wfc-timeout 30; outdated-wfc-timeout 20; degr-wfc-timeout 30; }
  net { shared-secret sync_disk; }
  on alpha { device /dev/nbd0; disk $work/disk.img;   address 127.0.0.1:7789; meta-disk internal; }
  on beta  { device /dev/nbd0; disk $work/disk-b.img; address 127.0.0.2:7789; meta-disk internal; }
}
EOF
export HADISK_CONFIG=$work/data.res HADISK_NODE=alpha HADISK_RUN_DIR=$work/run
echo "== a 1 GiB sparse image and a resource file in $work (node alpha)"
cat "$work/data.res"

step "$bin" create-md data
step "$bin" dump-md data

echo
echo "\$ hadisk daemon &        (logs in $work/daemon.log)"
"$bin" daemon >"$work/daemon.log" 2>&1 </dev/null &
daemon_pid=$!
for _ in $(seq 100); do
    [[ -S "$work/run/hadisk.sock" ]] && break
    sleep 0.05
done
step "$bin" up data
step "$bin" primary --force data
step "$bin" status data

uri="nbd+unix:///data?socket=$work/run/data.nbd"
step nbdinfo "$uri"
head -c 64M /dev/urandom >"$work/payload"
step nbdcopy --progress=false "$work/payload" "$uri"
echo
echo "\$ nbdcopy $uri - | head -c 64M | cmp - payload"
nbdcopy "$uri" - | head -c 64M | cmp - "$work/payload"
echo "the 64 MiB read back through the export are identical to what was written"
step "$bin" status --json data

echo
echo "\$ kill -TERM <daemon>     (clean stop: finish I/O, flush, metadata clean)"
kill -TERM "$daemon_pid"
wait "$daemon_pid" || true
daemon_pid=""
step "$bin" dump-md data
echo
echo "== done; the last lines of the daemon's log:"
tail -n 5 "$work/daemon.log"
