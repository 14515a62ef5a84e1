#!/usr/bin/env bash
# Resync benchmark, in one run (issue 5): on a SIZE_MIB (default 4 GiB) pair
# of hadisk daemons on loopback,
#   1. the full sync (`primary --force` on a new connected pair) and nbdcopy
#      copying the same bytes between the same two disks (nbdkit both sides);
#   2. a bitmap resync of 1% of the device written at random 4 KiB blocks
#      while the peer was disconnected, and nbdcopy copying the same blocks
#      (a sparse image holding exactly those blocks, --destination-is-zero so
#      that only they are copied) between the same two disks;
#   3. the bytes the SyncSource's link socket sent during each (tcp_info
#      bytes_acked of alpha's connection, read with `ss -ti`: the daemon has
#      no byte counter of its own) against the dirty bytes;
#   4. application write throughput (fio through the Primary's export)
#      during a default-rate full resync of a fresh pair against the same job
#      on the same pair once it is in sync.
# Both disks are compared (sha256 of the usable areas) after every sync.
#
# Environment:
#   SIZE_MIB    backing file size (default 4096)
#   RUNTIME_S   seconds of the fio write job (default 6)
#   WORK_DIR    where the images live (default: a fresh dir under /var/tmp)
#   RESULTS     markdown file whose "## Resync" section is replaced
#               (default bench/RESULTS.md; empty = do not write)
#   HADISK_BIN  the hadisk binary (default: cargo build --release -p hadisk)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
SIZE_MIB=${SIZE_MIB:-4096}
RUNTIME_S=${RUNTIME_S:-6}
RESULTS=${RESULTS-$here/RESULTS.md}
work=${WORK_DIR:-$(mktemp -d /var/tmp/resync-compare.XXXXXX)}
mkdir -p "$work"
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
cleanup() { cleanup_work; }
trap cleanup EXIT

build_hadisk
tree=$(tree_id)

# In sync: the plain status shows the peer's disk UpToDate and no
# "replication:" (Established). One small Rust process per poll and no
# Python: on 2 cores a Python start every 50 ms took CPU from the daemons.
in_sync() {
    local st
    st=$(hadisk "$work/alpha" alpha status)
    [[ $st == *peer-disk:UpToDate* && $st != *replication:* ]]
}

wait_in_sync() {
    until in_sync; do sleep 0.05; done
}

# Bytes alpha's end of the peer link has sent and had acknowledged (the
# link is alpha's outgoing connection to beta's port; alpha sorts first).
link_bytes() {
    ss -tinH state established "( dport = :$port_b )" 2>/dev/null |
        py 'import re,sys; m=re.findall(r"bytes_acked:(\d+)", sys.stdin.read()); print(sum(map(int,m)))'
}

# A new connected pair over a.img and b.img (fresh metadata on both).
new_pair() {
    up_pair ""
    uri="nbd+unix:///data?socket=$work/alpha/run/data.nbd"
}

same_disks() { # what
    local a b
    a=$(head -c "$usable" "$work/a.img" | sha256sum | cut -d' ' -f1)
    b=$(head -c "$usable" "$work/b.img" | sha256sum | cut -d' ' -f1)
    [[ $a == "$b" ]] || { echo "$1: the disks differ" >&2; exit 1; }
}

# nbdcopy between two nbdkit file exports; prints seconds.
nbdcopy_s() { # src_img dst_img [nbdcopy flags]
    local src=$1 dst=$2
    shift 2
    # nbdkit leaves its socket behind when killed: a stale one makes the
    # next start fail with "Address already in use".
    rm -f "$work/src.sock" "$work/dst.sock"
    nbdkit -f -U "$work/src.sock" file "$src" >>"$work/nbdkit-src.log" 2>&1 &
    pids+=($!)
    nbdkit -f -U "$work/dst.sock" file "$dst" >>"$work/nbdkit-dst.log" 2>&1 &
    pids+=($!)
    wait_uri "nbd+unix:///?socket=$work/src.sock" || exit 1
    wait_uri "nbd+unix:///?socket=$work/dst.sock" || exit 1
    local t0
    t0=$(now)
    nbdcopy "$@" "nbd+unix:///?socket=$work/src.sock" "nbd+unix:///?socket=$work/dst.sock" || exit 1
    py "import time; print(time.time() - $t0)"
    stop_all
}

# The application write job: 64 KiB random writes, 16 in flight, over the
# first 3/4 of the device, for RUNTIME_S; prints MB/s.
app_writes() {
    fio --name=app --ioengine=nbd --uri="$uri" --rw=randwrite --bs=64k --iodepth=16 \
        --size="$((SIZE_MIB * 3 / 4))m" --time_based --runtime="$RUNTIME_S" --invalidate=0 \
        --randseed=7 --output-format=json --output="$work/app.json" >/dev/null
    py "import json; j=json.load(open('$work/app.json'))['jobs'][0]; print(f\"{j['write']['bw_bytes']/1e6:.0f}\")"
}

echo "seeding a ${SIZE_MIB} MiB random image" >&2
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$work/a.img"
# beta's disk is written out (zeros), as a real disk has every block: a
# sparse file would make the full sync pay ext4's block allocation, which
# nbdcopy's later copy onto the same, by then allocated, file would not.
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/zero >"$work/b.img"
sync

# 1. Full sync on a new pair, no other load.
new_pair
t0=$(now)
hadisk "$work/alpha" alpha primary --force data >/dev/null
total_seen=""
until in_sync; do
    if [[ -z $total_seen ]]; then
        t=$(field "(r['peer']['resync'] or {}).get('total_bytes', '')")
        [[ -n $t ]] && total_seen=$t
    fi
    sleep 0.05
done
full_s=$(py "import time; print(time.time() - $t0)")
usable=$(field "r['size_bytes']")
full_sent=$(link_bytes)
same_disks "full sync"
echo "full sync: $usable bytes in $full_s s (resync total $total_seen); link sent $full_sent bytes" >&2

# 2. 1% of the blocks written at random while disconnected: fio's random
# map writes each block at most once, so the dirty set is exactly N blocks.
hadisk "$work/alpha" alpha disconnect data >/dev/null
blocks=$((usable / 4096 / 100))
fio --name=dirty --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k --iodepth=16 \
    --size="$usable" --number_ios="$blocks" --randseed=11 --invalidate=0 --end_fsync=1 \
    --output-format=json --output="$work/dirty.json" >/dev/null
dirty=$((blocks * 4096))
oos=$(field "r['peer']['out_of_sync_bytes']")
[[ $oos == "$dirty" ]] || echo "warning: out_of_sync_bytes $oos != dirty $dirty" >&2
# The same blocks, at the same offsets, in an otherwise empty sparse image:
# nbdcopy's baseline copies exactly them (same fio job, same seed).
truncate -s "$((SIZE_MIB * 1024 * 1024))" "$work/dirty.img"
fio --name=dirty --ioengine=psync --filename="$work/dirty.img" --rw=randwrite --bs=4k \
    --size="$usable" --number_ios="$blocks" --randseed=11 --invalidate=0 \
    --output-format=json --output="$work/dirty-file.json" >/dev/null
t0=$(now)
hadisk "$work/alpha" alpha connect data >/dev/null
until [[ $(field "r['peer']['connection']") == Connected ]]; do sleep 0.01; done
t1=$(now)
wait_in_sync
bm_s=$(py "import time; print(time.time() - $t1)")
bm_connect_s=$(py "print($t1 - $t0)")
bm_sent=$(link_bytes)
same_disks "bitmap resync"
echo "bitmap resync: $dirty dirty bytes (out_of_sync $oos) in $bm_s s after $bm_connect_s s to connect; link sent $bm_sent bytes" >&2

# 4a. The write job on the pair in sync (no resync).
w_idle=$(app_writes)
same_disks "writes without resync"
echo "app writes without resync: $w_idle MB/s" >&2
stop_all

# 1b, 2b. nbdcopy between the same two disks. With --flush, as the
# baseline: a resync ends with the SyncTarget's flush (its disk is declared
# UpToDate only once the data is durable), and nbdcopy without --flush
# exits with up to the whole copy still in the page cache. The copy
# without --flush is reported too.
sync
copy_full_nf_s=$(nbdcopy_s "$work/a.img" "$work/b.img")
sync
copy_full_s=$(nbdcopy_s "$work/a.img" "$work/b.img" --flush)
copy_bm_s=$(nbdcopy_s "$work/dirty.img" "$work/b.img" --destination-is-zero --flush)
copy_bytes=$(stat -c %s "$work/a.img")
echo "nbdcopy: full $copy_bytes bytes in $copy_full_s s with --flush ($copy_full_nf_s s without); dirty blocks in $copy_bm_s s" >&2

# 4b. The write job during the full sync of a fresh pair (default rate).
head -c "$((64 * 1024 * 1024))" /dev/urandom | dd of="$work/a.img" conv=notrunc status=none
new_pair
hadisk "$work/alpha" alpha primary --force data >/dev/null
app_writes >"$work/w_sync" &
app_pid=$!
# Halfway through the job: the SyncTarget's (beta's) rate controller, and
# the resync's current speed on alpha.
sleep "$(py "print($RUNTIME_S / 2)")"
ctl=$(hadisk "$work/beta" beta status --json | py "import json,sys; r=json.load(sys.stdin)['resources'][0]['resync_rate']
lim = r['limit_bytes_per_s']
print(f\"{r['mode']}, throttled: {r['throttled']}, limit {'none' if lim is None else f'{lim/1e6:.0f} MB/s'}, application writes measured {r['app_bytes_per_s']/1e6:.0f} MB/s\")")
mid_speed=$(field "f\"{(r['peer']['resync'] or {}).get('speed_bytes_per_s', 0)/1e6:.0f}\"")
wait "$app_pid"
w_sync=$(cat "$work/w_sync")
left=$(field "r['peer']['replication']+' '+str(round((r['peer']['resync'] or {}).get('done_percent', 100.0),1))")
t0=$(now)
wait_in_sync
tail_s=$(py "import time; print(time.time() - $t0)")
same_disks "full sync under writes"
stop_all
echo "app writes during the full sync: $w_sync MB/s (at fio's end: $left % done; $tail_s s more to finish)" >&2

r() { py "print(f'{$1:.2f}')"; }
full_mbs=$(r "$usable / $full_s / 1e6")
copy_full_mbs=$(r "$copy_bytes / $copy_full_s / 1e6")
copy_full_nf_mbs=$(r "$copy_bytes / $copy_full_nf_s / 1e6")
bm_mbs=$(r "$dirty / $bm_s / 1e6")
copy_bm_mbs=$(r "$dirty / $copy_bm_s / 1e6")
table=$(
    echo "| measure | hadisk | nbdcopy --flush (nbdkit both sides) | ratio | goal |"
    echo "|---|---|---|---|---|"
    echo "| full sync of $((usable >> 20)) MiB | $(r "$full_s") s = ${full_mbs} MB/s | $(r "$copy_full_s") s = ${copy_full_mbs} MB/s | $(r "$full_mbs / $copy_full_mbs")x | ≥ 0.9x |"
    echo "| the same, nbdcopy without --flush (data not yet durable when it exits) | ${full_mbs} MB/s | $(r "$copy_full_nf_s") s = ${copy_full_nf_mbs} MB/s | $(r "$full_mbs / $copy_full_nf_mbs")x | |"
    echo "| bitmap resync of 1% ($blocks random 4 KiB blocks, $dirty B) | $(r "$bm_s") s = ${bm_mbs} MB/s | $(r "$copy_bm_s") s = ${copy_bm_mbs} MB/s | $(r "$bm_mbs / $copy_bm_mbs")x | |"
    echo "| bytes sent by the SyncSource's link / bytes to sync: bitmap resync | $bm_sent / $dirty | | $(py "print(f'{$bm_sent / $dirty:.4f}')")x | ≤ 1.01x |"
    echo "| bytes sent by the SyncSource's link / bytes to sync: full sync | $full_sent / $usable | | $(py "print(f'{$full_sent / $usable:.4f}')")x | |"
    echo "| app writes (fio randwrite 64 KiB QD16, ${RUNTIME_S} s) during a default-rate full sync / in sync | $w_sync / $w_idle MB/s | | $(r "$w_sync / $w_idle")x | ≥ 0.5x |"
)
note="Produced by \`bench/resync-compare.sh\` on tree $tree: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores (shared, \
load average $(cut -d' ' -f1-3 /proc/loadavg)), ${SIZE_MIB} MiB files on $(df -T "$work" | awk 'NR==2{print $2}') (alpha's random, beta's written with \
zeros first so that both the sync and nbdcopy write onto allocated blocks, as on a disk), page cache, two hadisk daemons on loopback, protocol C, default resync rate, one round. out_of_sync_bytes \
before the reconnect: $oos (dirty set $dirty). The bitmap resync is timed from the link's \`Connected\` \
(first status poll that shows it) to in sync; \`connect\` to \`Connected\` took $(r "$bm_connect_s") s more. Link bytes: tcp_info bytes_acked of alpha's link socket \
from \`ss -ti\` (whole connection: handshake, bitmap exchange, resync data with frame headers, pings). \
The full-sync nbdcopy copies the whole files (usable area plus metadata); the 1% nbdcopy copies \
exactly the dirty blocks (a sparse image with them at the same offsets, --destination-is-zero). \
The baseline copies use --flush: hadisk's sync time includes the SyncTarget's final flush (a resync \
declares the disk UpToDate only once its data is durable), so nbdcopy's includes its destination's. \
Write job during the sync: fio's end found the resync at: $left % done ($(r "$tail_s") s more to finish); \
halfway through it the SyncTarget's controller was: $ctl, and the resync's current speed $mid_speed MB/s."

echo
echo "$table"
echo
echo "$note"

if [[ -n "$RESULTS" ]]; then
    python3 - "$RESULTS" "$table" "$note" <<'PY'
import sys, re, os
path, table, note = sys.argv[1:4]
section = "## Resync\n\n" + table + "\n\n" + note + "\n"
text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
pattern = re.compile(r"## Resync\n.*?(?=\n## |\Z)", re.S)
text = pattern.sub(lambda _: section.rstrip("\n"), text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text.rstrip("\n") + "\n")
PY
fi
