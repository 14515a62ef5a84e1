#!/usr/bin/env bash
# Replication benchmark, in one run: the connected hadisk pair (protocol C,
# peer link over loopback TCP) next to hadisk standalone (a Primary with no
# peer), nbdkit's file plugin (the unreplicated baseline) and the QEMU quorum
# mirror (qemu-storage-daemon, vote-threshold 2, over a local raw file and an
# NBD client of a qemu-nbd on loopback TCP: ../shared/testing/peers.md), with
# the fio jobs of bench/nbd-compare.sh; plus the initial sync's throughput
# next to nbdcopy copying the same bytes between the same two disks.
#
# Every target gets SIZE_MIB files of random data (no holes) through the page
# cache, its own files. Each round starts every target once (the pair's
# initial full sync is paid then, outside the measurement) and then runs
# job-major: each job on each target in turn, the targets' order rotated
# from round to round, with a `sync` before each job so that no job pays
# for the previous one's dirty pages. A ratio then compares runs seconds
# apart, not minutes: this shared 2-core machine's speed drifts by 10-30 %
# over minutes (until 2026-12-01 the script ran target-major, each target
# all its jobs in one go, and a ratio's two sides were up to four minutes
# apart). With ROUNDS > 1 each figure is the median of its rounds.
#
# Environment:
#   RUNTIME_S   seconds per fio job (default 8)
#   ROUNDS      sweeps over all targets and jobs; figures are medians (default 1)
#   SIZE_MIB    backing file size (default 1024)
#   TARGETS     from "nbdkit hadisk pair qemu-mirror" (default: all four)
#   WORK_DIR    where the images live (default: a fresh dir under /var/tmp)
#   RESULTS     markdown file whose "## Replication" section is replaced
#               (default bench/RESULTS.md; empty = do not write)
#   HADISK_BIN  the hadisk binary (default: cargo build --release -p hadisk)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
RUNTIME_S=${RUNTIME_S:-8}
ROUNDS=${ROUNDS:-1}
SIZE_MIB=${SIZE_MIB:-1024}
FIO_SIZE_MIB=$((SIZE_MIB - 16))
TARGETS=${TARGETS:-"nbdkit hadisk pair qemu-mirror"}
RESULTS=${RESULTS-$here/RESULTS.md}
work=${WORK_DIR:-$(mktemp -d /var/tmp/repl-compare.XXXXXX)}
mkdir -p "$work"
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
cleanup() { cleanup_work; }
trap cleanup EXIT

build_hadisk


status_field() { # dir node python-expression-on-r
    hadisk "$1" "$2" status --json | python3 -c "import json,sys; r=json.load(sys.stdin)['resources'][0]; print($3)"
}

# The peer is Established and UpToDate (status text: no "replication:"
# line while Established).
synced() { # dir node
    local st
    st=$(hadisk "$1" "$2" status)
    [[ $st == *peer-disk:UpToDate* && $st != *replication:* ]]
}

# A pair over two images in DIR: alpha (Primary) and beta, config
# DIR/pair.res (the global `res`, which lib.sh's helpers read). With
# "standalone", beta is never started and alpha is a Primary with no peer.
# Sets uri, and for a pair sync_s and usable.
start_pair() { # mode dir
    local mode=$1 d=$2 pa pb
    res="$d/pair.res"
    read -r pa pb < <(free_ports)
    cat >"$res" <<EOF
resource data {
  net { protocol C; }
  on alpha { device /dev/nbd0; disk $d/a.img; address 127.0.0.1:$pa; meta-disk internal; }
  on beta { device /dev/nbd0; disk $d/b.img; address 127.0.0.1:$pb; meta-disk internal; }
}
EOF
    hadisk "$d/alpha" alpha create-md --force --yes data >/dev/null
    start_daemon "$d/alpha" alpha
    hadisk "$d/alpha" alpha up data >/dev/null
    if [[ $mode == pair ]]; then
        hadisk "$d/beta" beta create-md --force --yes data >/dev/null
        start_daemon "$d/beta" beta
        hadisk "$d/beta" beta up data >/dev/null
        until [[ $(status_field "$d/alpha" alpha "r['peer']['connection']") == Connected ]]; do sleep 0.1; done
    fi
    local t0
    t0=$(date +%s.%N)
    hadisk "$d/alpha" alpha primary --force data >/dev/null
    if [[ $mode == pair ]]; then
        # The plain status (one small Rust process per poll, no Python):
        # polling must not take CPU from the sync it measures.
        until synced "$d/alpha" alpha; do sleep 0.02; done
        sync_s=$(python3 -c "import time; print(time.time() - $t0)")
        usable=$(status_field "$d/alpha" alpha "r['size_bytes']")
    fi
    uri="nbd+unix:///data?socket=$d/alpha/run/data.nbd"
}

# A target's directory: its images, sockets and logs (and a pair's nodes).
tdir() { echo "$work/t.$1"; }

start_target() { # name
    local name=$1 d
    d=$(tdir "$name")
    case $name in
        nbdkit)
            nbdkit -f -U "$d/nbdkit.sock" file "$d/a.img" >"$d/nbdkit.log" 2>&1 &
            pids+=($!)
            uri="nbd+unix:///?socket=$d/nbdkit.sock" ;;
        hadisk) start_pair standalone "$d" ;;
        pair) start_pair pair "$d" ;;
        qemu-mirror)
            local port
            port=$(free_port)
            qemu-nbd -f raw --cache=writeback --aio=threads -t -e 8 -b 127.0.0.1 -p "$port" -x b "$d/b.img" \
                >"$d/qemu-nbd.log" 2>&1 &
            pids+=($!)
            wait_uri "nbd://127.0.0.1:$port/b"
            qemu-storage-daemon \
                --blockdev driver=file,node-name=fileA,filename="$d/a.img",cache.direct=off,aio=threads \
                --blockdev driver=raw,node-name=rawA,file=fileA \
                --blockdev driver=nbd,node-name=nbdB,server.type=inet,server.host=127.0.0.1,server.port="$port",export=b \
                --blockdev driver=quorum,node-name=r0,children.0=rawA,children.1=nbdB,vote-threshold=2,read-pattern=fifo \
                --nbd-server addr.type=unix,addr.path="$d/qsd.sock" \
                --export type=nbd,id=exp0,node-name=r0,name=r0,writable=on >"$d/qsd.log" 2>&1 &
            pids+=($!)
            uri="nbd+unix:///r0?socket=$d/qsd.sock" ;;
        *) echo "unknown target $name" >&2; exit 2 ;;
    esac
    wait_uri "$uri"
}

figures() {
    python3 - "$1" <<'PY2'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
w, r = j["write"], j["read"]
side = w if w["io_bytes"] > 0 else r
# fio's total latency (submission + completion), as bench/nbd-compare.sh:
# clat alone depends on which thread ran inside fio's send.
lat = side["lat_ns"]
p99 = lat.get("percentile", {}).get("99.000000", 0) / 1000
print(f"{side['bw_bytes']/1e9:.3f} {side['iops']:.0f} {lat['mean']/1000:.1f} {p99:.1f}")
PY2
}

# median "a b c;d e f;...": per column, the (upper) median of the rows.
median() {
    python3 - "$1" <<'PY2'
import sys
rows = [r.split() for r in sys.argv[1].split(";") if r]
print(" ".join(sorted(col, key=float)[len(col) // 2] for col in zip(*rows)))
PY2
}

head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$work/seed.img"
read -r -a targets <<<"$TARGETS"
declare -A result uris
sync_runs=""
copy_runs=""
sync_line=""
for round in $(seq 1 "$ROUNDS"); do
    # This round's order: the target list rotated by one per round, so
    # that no target always runs first (or right after another).
    shift_by=$(((round - 1) % ${#targets[@]}))
    order=("${targets[@]:shift_by}" "${targets[@]:0:shift_by}")
    for target in "${order[@]}"; do
        d=$(tdir "$target")
        # Fresh files, and no stale sockets or node directories of the
        # previous round (a server refuses to bind a stale socket, and a
        # daemon's control socket must be its own).
        rm -rf "$d"
        mkdir -p "$d"
        cp "$work/seed.img" "$d/a.img"
        cp "$work/seed.img" "$d/b.img"
    done
    sync
    for target in "${order[@]}"; do
        start_target "$target"
        uris[$target]=$uri
        if [[ $target == pair ]]; then
            pair_usable=$usable
            sync_mbs=$(python3 -c "print(f'{$usable / $sync_s / 1e6:.0f}')")
            sync_runs+="$sync_mbs;"
            echo "round $round pair: initial full sync of $usable bytes in ${sync_s} s = $sync_mbs MB/s" >&2
        fi
    done
    for entry in "${jobs[@]}"; do
        job=${entry%%|*}
        for target in "${order[@]}"; do
            sync
            run_fio "${uris[$target]}" "$job" "${entry#*|} --lat_percentiles=1" "$work/$target.$job.json"
            figs=$(figures "$work/$target.$job.json")
            result[$target.$job]+="$figs;"
            echo "round $round $target $job: $figs" >&2
        done
    done
    if [[ " $TARGETS " == *" pair "* ]]; then
        # Protocol C: after the writes, both disks' usable areas are equal.
        d=$(tdir pair)
        a_sum=$(head -c "$pair_usable" "$d/a.img" | sha256sum | cut -d' ' -f1)
        b_sum=$(head -c "$pair_usable" "$d/b.img" | sha256sum | cut -d' ' -f1)
        [[ $a_sum == "$b_sum" ]] || { echo "pair: the disks differ after the run" >&2; exit 1; }
    fi
    stop_all
    for target in "${order[@]}"; do rm -rf "$(tdir "$target")"; done

    if [[ " $TARGETS " == *" pair "* ]]; then
        # nbdcopy copying the same bytes between the same two disks, each
        # exported by nbdkit (one NBD connection per side, as the link is one).
        cp "$work/seed.img" "$work/a.img"
        cp "$work/seed.img" "$work/b.img"
        rm -f "$work"/*.sock
        sync
        nbdkit -f -U "$work/src.sock" file "$work/a.img" >/dev/null 2>&1 &
        pids+=($!)
        nbdkit -f -U "$work/dst.sock" file "$work/b.img" >/dev/null 2>&1 &
        pids+=($!)
        wait_uri "nbd+unix:///?socket=$work/src.sock"
        wait_uri "nbd+unix:///?socket=$work/dst.sock"
        t0=$(date +%s.%N)
        # The whole files (this nbdcopy has no --length): the usable area plus
        # the small metadata area; throughput is per byte either way.
        nbdcopy "nbd+unix:///?socket=$work/src.sock" "nbd+unix:///?socket=$work/dst.sock"
        copy_s=$(python3 -c "import time; print(time.time() - $t0)")
        stop_all
        rm -f "$work/a.img" "$work/b.img"
        copy_mbs=$(python3 -c "print(f'{$SIZE_MIB * 1048576 / $copy_s / 1e6:.0f}')")
        copy_runs+="$copy_mbs;"
        echo "round $round nbdcopy: $copy_mbs MB/s" >&2
    fi
done
for key in "${!result[@]}"; do result[$key]=$(median "${result[$key]}"); done
if [[ -n $sync_runs ]]; then
    sync_mbs=$(median "$sync_runs")
    copy_mbs=$(median "$copy_runs")
    sync_line="| initial full sync of $((usable >> 20)) MiB | MB/s | $sync_mbs | nbdcopy between the same two disks (nbdkit both sides): $copy_mbs MB/s | $(python3 -c "print(f'{$sync_mbs / $copy_mbs:.2f}x')") of nbdcopy |"
fi

val() { echo "${result[$1.$2]:-}" | cut -d' ' -f"$3"; }

table=$(
    echo "| workload | metric | ${TARGETS// / | } | pair / nbdkit | pair / QEMU mirror | pair / standalone |"
    printf '|---|---|'; for _ in $TARGETS; do printf -- '---|'; done; echo '---|---|---|'
    for entry in "${jobs[@]}"; do
        job=${entry%%|*}
        case $job in
            seqwrite*) metrics="GB/s:1" ;;
            *qd1) metrics="mean_us:3 p99_us:4" ;;
            *) metrics="IOPS:2" ;;
        esac
        for m in $metrics; do
            label=${m%%:*}; field=${m##*:}
            row="| $job | $label |"
            for target in $TARGETS; do row+=" $(val "$target" "$job" "$field") |"; done
            p=$(val pair "$job" "$field")
            for base in nbdkit qemu-mirror hadisk; do
                b=$(val "$base" "$job" "$field")
                if [[ -z $p || -z $b ]]; then row+=" |"
                elif [[ $label == *_us ]]; then row+=" $(ratio "$b" "$p") |"
                else row+=" $(ratio "$p" "$b") |"; fi
            done
            echo "$row"
        done
    done
)
note="Produced by \`bench/repl-compare.sh\`: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores (shared), \
${SIZE_MIB} MiB random-filled files on $(df -T "$work" | awk 'NR==2{print $2}'), page cache, \
fio ioengine=nbd over a Unix socket, ${FIO_SIZE_MIB} MiB range, ${RUNTIME_S} s per job, median of ${ROUNDS} round(s), \
job-major order (every server started once per round, then each job on each target in turn, the order rotated per round, \`sync\` before each job), \
latency = fio's total latency (lat, not clat). pair = two hadisk daemons on \
loopback, protocol C (a write completes when both disks have it), the Primary's export measured \
after the initial full sync; hadisk = one daemon, a Primary with no peer; qemu-mirror = \
qemu-storage-daemon quorum (vote-threshold 2) of a local raw file and qemu-nbd over loopback TCP. \
Ratios: higher is better (for latency, base/pair)."

echo
echo "$table"
[[ -n $sync_line ]] && { echo; echo "$sync_line"; }
echo
echo "$note"

if [[ -n "$RESULTS" ]]; then
    python3 - "$RESULTS" "$table" "$sync_line" "$note" <<'PY'
import sys, re, os
path, table, sync_line, note = sys.argv[1:5]
section = "## Replication\n\n" + table + "\n\n"
if sync_line:
    section += "| sync | metric | hadisk | baseline | ratio |\n|---|---|---|---|---|\n" + sync_line + "\n\n"
section += note + "\n"
notes = os.path.join(os.path.dirname(path), "repl-notes.md")
if os.path.exists(notes):
    section += "\n" + open(notes).read().strip() + "\n"
text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
pattern = re.compile(r"## Replication\n.*?(?=\n## |\Z)", re.S)
text = pattern.sub(lambda _: section.rstrip("\n") + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text.rstrip("\n") + "\n")
PY
fi
