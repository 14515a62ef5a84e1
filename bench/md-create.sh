#!/usr/bin/env bash
# create-md and dump-md on a 1 TiB sparse file: wall time and bytes written.
#
# Bytes written are measured three ways:
#   wchar        bytes passed to write(2)/pwrite(2) by hadisk (and its stdout)
#   write_bytes  bytes the kernel sent towards storage for it (page cache)
#   allocated    growth of the sparse file's allocated blocks (du)
# The counters come from /proc/PID/io of a shell that has reaped hadisk:
# the kernel adds a waited-for child's I/O to its parent's counters.
#
# Usage: bench/md-create.sh [SIZE]   (default 1T; needs a filesystem with
# sparse files and punch-hole support for the figures to mean anything)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1T}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p hadisk
BIN=$CARGO_TARGET_DIR/release/hadisk
DIR=$(mktemp -d /var/tmp/hadisk-md-bench.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
truncate -s "$SIZE" "$DIR/disk.img"
cat > "$DIR/data.res" <<RES
resource data {
  on bench { disk $DIR/disk.img; address 127.0.0.1:7789; meta-disk internal; }
  on peer  { disk /dev/sdb; address 127.0.0.2:7789; meta-disk internal; }
}
RES
export HADISK_CONFIG=$DIR/data.res HADISK_NODE=bench HADISK_RUN_DIR=$DIR

alloc() { echo $(( $(stat -c %b "$DIR/disk.img") * $(stat -c %B "$DIR/disk.img") )); }

# run LABEL ARGS...: one measured hadisk run; prints a table row.
run() {
  local label=$1; shift
  local before after out
  before=$(alloc)
  sync
  out=$(bash -c '
    start=$(date +%s%N)
    "$0" "$@" > /dev/null
    end=$(date +%s%N)
    echo "wall_ms $(( (end - start) / 1000000 ))"
    grep -E "^(wchar|write_bytes|rchar|read_bytes):" /proc/$$/io | tr -d :
  ' "$BIN" "$@")
  after=$(alloc)
  local wall wchar wbytes rchar
  wall=$(awk '$1=="wall_ms"{print $2}' <<<"$out")
  wchar=$(awk '$1=="wchar"{print $2}' <<<"$out")
  wbytes=$(awk '$1=="write_bytes"{print $2}' <<<"$out")
  rchar=$(awk '$1=="rchar"{print $2}' <<<"$out")
  printf '| %-22s | %8s | %12s | %12s | %12s | %12s |\n' \
    "$label" "$wall" "$wchar" "$wbytes" "$(( after - before ))" "$rchar"
}

echo "disk: $SIZE sparse file on $(df --output=fstype "$DIR" | tail -1) ($DIR)"
echo "host: $(nproc) cores, $(uname -r)"
echo
printf '| %-22s | %8s | %12s | %12s | %12s | %12s |\n' command wall_ms wchar write_bytes allocated rchar
echo '|------------------------|---------:|-------------:|-------------:|-------------:|-------------:|'
run "create-md" create-md data
run "create-md --force" create-md data --force
run "dump-md" dump-md data
run "dump-md --json" dump-md data --json
echo
"$BIN" dump-md data | sed -n '2,6p'
