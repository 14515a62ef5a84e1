#!/usr/bin/env bash
# Verify and checksum-resync benchmark, in one run (issue 5, item 4): on a
# SIZE_MIB (default 1 GiB) pair of hadisk daemons on loopback whose disks
# hold the same random data,
#   1. the initial sync (`primary --force`) with `csums-alg ALG`: the
#      disks are identical, so only digests cross the link;
#   2. a csums resync after `invalidate` on the Secondary (the same claim,
#      on a pair that is already in sync: what an operator runs);
#   3. an online verify pass (`verify-alg ALG`) from the Primary;
#   (1-3 for each ALG of ALGS, each on a fresh pair);
#   4. nbdcopy copying the same bytes between the same two disks (nbdkit
#      both sides), for throughput.
# Link bytes: tcp_info of alpha's link socket (`ss -ti`: bytes_acked sent
# plus bytes_received), both directions, before and after each step; the
# goal is < 1 % of the device for a csums resync of identical disks.
# Both disks are compared (sha256 of the usable areas) after every step.
#
# Environment:
#   SIZE_MIB    backing file size (default 1024)
#   ALGS        digest algorithms of steps 1-3, each on a fresh pair
#               (default "sha256 crc32c")
#   WORK_DIR    where the images live (default: a fresh dir under /var/tmp)
#   RESULTS     markdown file whose "## Verify and checksum resync" section
#               is replaced (default bench/RESULTS.md; empty = do not write)
#   HADISK_BIN  the hadisk binary (default: cargo build --release -p hadisk)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
SIZE_MIB=${SIZE_MIB:-1024}
ALGS=${ALGS:-sha256 crc32c}
RESULTS=${RESULTS-$here/RESULTS.md}
work=${WORK_DIR:-$(mktemp -d /var/tmp/csums.XXXXXX)}
mkdir -p "$work"
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
cleanup() { cleanup_work; }
trap cleanup EXIT

build_hadisk
tree=$(tree_id)
DAEMON_LOG=info

in_sync() { [[ $(field "r['peer']['replication']+r['peer']['disk']+r['peer']['connection']") == EstablishedUpToDateConnected ]]; }
wait_in_sync() { until in_sync; do sleep 0.05; done; }

# Both directions of alpha's link socket (alpha dials beta's port).
link_bytes() {
    ss -tinH state established "( dport = :$port_b )" 2>/dev/null |
        py 'import re,sys; t=sys.stdin.read(); print(sum(int(x) for x in re.findall(r"bytes_(?:acked|received):(\d+)", t)))'
}

same_disks() { # what
    local a b
    a=$(head -c "$usable" "$work/a.img" | sha256sum | cut -d' ' -f1)
    b=$(head -c "$usable" "$work/b.img" | sha256sum | cut -d' ' -f1)
    [[ $a == "$b" ]] || { echo "$1: the disks differ" >&2; exit 1; }
}

echo "seeding a ${SIZE_MIB} MiB random image and its copy" >&2
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$work/a.img"
cp "$work/a.img" "$work/b.img"
sync

# Steps 1-3 with digest algorithm $1 on a fresh pair over the same two
# files (new metadata; the data areas are still identical); appends a row.
rows=()
run_alg() {
    local alg=$1 b0 t0
    up_pair "csums-alg $alg; verify-alg $alg;"
    usable=$(field "r['size_bytes']")

    # 1. The initial (full) sync by digest: the disks hold the same data.
    b0=$(link_bytes)
    t0=$(now)
    hadisk "$work/alpha" alpha primary --force data >/dev/null
    wait_in_sync
    local init_s init_bytes inv_s inv_bytes ver_s ver_bytes ver_oos
    init_s=$(py "import time; print(time.time() - $t0)")
    init_bytes=$(($(link_bytes) - b0))
    same_disks "initial csums sync ($alg)"
    echo "$alg: initial csums sync: $usable bytes in $init_s s, $init_bytes link bytes" >&2

    # 2. invalidate on the Secondary: a full csums resync of identical disks.
    b0=$(link_bytes)
    t0=$(now)
    hadisk "$work/beta" beta invalidate data >/dev/null
    wait_in_sync
    inv_s=$(py "import time; print(time.time() - $t0)")
    inv_bytes=$(($(link_bytes) - b0))
    same_disks "csums resync after invalidate ($alg)"
    echo "$alg: csums resync after invalidate: $inv_s s, $inv_bytes link bytes" >&2

    # 3. An online verify pass from the Primary.
    b0=$(link_bytes)
    t0=$(now)
    hadisk "$work/alpha" alpha verify data >/dev/null
    until [[ $(field "str((r['peer']['verify'] or {}).get('running'))+r['peer']['replication']") == FalseEstablished ]]; do sleep 0.05; done
    ver_s=$(py "import time; print(time.time() - $t0)")
    ver_bytes=$(($(link_bytes) - b0))
    ver_oos=$(field "r['peer']['verify']['out_of_sync_bytes']")
    [[ $ver_oos == 0 ]] || { echo "verify found $ver_oos bytes out of sync on identical disks" >&2; exit 1; }
    echo "$alg: verify: $ver_s s, $ver_bytes link bytes, $ver_oos out of sync" >&2
    stop_all
    rows+=("$alg|$init_s|$init_bytes|$inv_s|$inv_bytes|$ver_s|$ver_bytes|$ver_oos")
}

for alg in $ALGS; do
    run_alg "$alg"
done

# 4. nbdcopy of the same bytes between the same two disks.
rm -f "$work/src.sock" "$work/dst.sock"
nbdkit -f -U "$work/src.sock" file "$work/a.img" >>"$work/nbdkit.log" 2>&1 &
pids+=($!)
nbdkit -f -U "$work/dst.sock" file "$work/b.img" >>"$work/nbdkit.log" 2>&1 &
pids+=($!)
wait_uri "nbd+unix:///?socket=$work/src.sock" || exit 1
wait_uri "nbd+unix:///?socket=$work/dst.sock" || exit 1
t0=$(now)
nbdcopy "nbd+unix:///?socket=$work/src.sock" "nbd+unix:///?socket=$work/dst.sock"
copy_s=$(py "import time; print(time.time() - $t0)")
copy_bytes=$(stat -c %s "$work/a.img")
stop_all
echo "nbdcopy: $copy_bytes bytes in $copy_s s" >&2

r() { py "print(f'{$1:.2f}')"; }
mbs() { r "$1 / $2 / 1e6"; }
copy_mbs=$(mbs "$copy_bytes" "$copy_s")
pct() { py "print(f'{$1 * 100 / $usable:.3f} %')"; }
table=$(
    echo "| measure | hadisk | nbdcopy (nbdkit both sides) | ratio | goal |"
    echo "|---|---|---|---|---|"
    for row in "${rows[@]}"; do
        IFS='|' read -r alg init_s init_bytes inv_s inv_bytes ver_s ver_bytes ver_oos <<<"$row"
        echo "| $alg: initial sync by digest of identical $((usable >> 20)) MiB disks | $(r "$init_s") s = $(mbs "$usable" "$init_s") MB/s | $(r "$copy_s") s = ${copy_mbs} MB/s | $(r "$(mbs "$usable" "$init_s") / $copy_mbs")x | |"
        echo "| $alg: link bytes of that sync / device | $init_bytes / $usable | | $(pct "$init_bytes") | < 1 % |"
        echo "| $alg: csums resync after \`invalidate\` (identical disks) | $(r "$inv_s") s = $(mbs "$usable" "$inv_s") MB/s | $(r "$copy_s") s = ${copy_mbs} MB/s | $(r "$(mbs "$usable" "$inv_s") / $copy_mbs")x | |"
        echo "| $alg: link bytes of that resync / device | $inv_bytes / $usable | | $(pct "$inv_bytes") | < 1 % |"
        echo "| $alg: online verify pass, found out of sync: $ver_oos | $(r "$ver_s") s = $(mbs "$usable" "$ver_s") MB/s | $(r "$copy_s") s = ${copy_mbs} MB/s | $(r "$(mbs "$usable" "$ver_s") / $copy_mbs")x | |"
        echo "| $alg: link bytes of the verify / device | $ver_bytes / $usable | | $(pct "$ver_bytes") | |"
    done
)
note="Produced by \`bench/csums.sh\` on tree $tree: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores (shared, \
load average $(cut -d' ' -f1-3 /proc/loadavg)), ${SIZE_MIB} MiB files on $(df -T "$work" | awk 'NR==2{print $2}'), \
page cache, two hadisk daemons on loopback (release build), protocol C, default resync rate, one round. \
Both disks hold the same random data (a copy) before \`create-md\`. Link bytes: tcp_info of alpha's link socket \
from \`ss -ti\`, bytes_acked + bytes_received (both directions: the target's digests, the source's replies, \
the handshake, pings). Digests: one per 4 KiB block, 32 bytes with sha256 (0.78 % of the data in digest \
frames before headers), 4 with crc32c (0.1 %); each algorithm runs on a fresh pair (new metadata) over the same files. Times run from the command to the first status poll that \
shows the pair in sync (verify: finished). nbdcopy copies the whole files (usable area plus metadata)."

echo
echo "$table"
echo
echo "$note"

if [[ -n "$RESULTS" ]]; then
    python3 - "$RESULTS" "$table" "$note" <<'PY'
import sys, re, os
path, table, note = sys.argv[1:4]
title = "## Verify and checksum resync"
section = title + "\n\n" + table + "\n\n" + note + "\n"
text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
pattern = re.compile(re.escape(title) + r"\n.*?(?=\n## |\Z)", re.S)
text = pattern.sub(lambda _: section.rstrip("\n"), text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text.rstrip("\n") + "\n")
PY
fi
