#!/usr/bin/env bash
# Side-by-side NBD export benchmark: hadisk (the real daemon, a standalone
# Primary) vs nbdkit's file plugin vs qemu-nbd.
#
# One run, the same kind of backing file for every target (SIZE_MIB of random
# data, no holes, on the same file system, through the page cache), fio
# ioengine=nbd against each, one markdown table with ratios to nbdkit.
# The machine is shared, so the order is job-major: for each job, every
# target runs back to back (a fresh server each time, `sync` before it so
# that no target pays for another's dirty pages), and with ROUNDS > 1 the
# whole sweep repeats and each figure is the median of its rounds.
#
# hadisk targets (crates/nbd-server/src/local.rs explains the I/O modes):
#   hadisk           `hadisk daemon` as shipped (HADISK_IO_MODE unset: adaptive)
#   hadisk-inline    the same daemon with HADISK_IO_MODE=inline
#   hadisk-blocking  the same daemon with HADISK_IO_MODE=blocking
#   serve-file       the NBD server alone: crates/nbd-server's serve-file example
#                    over the whole file (LocalVolume, default I/O mode), no
#                    replication core, no metadata; isolates the server's cost
# Each: create-md --force (once), then per job: daemon, up, primary --force;
# export "data" on RUN_DIR/data.nbd. The export is the usable size (the
# metadata sits at the end of the file), so fio uses FIO_SIZE_MIB (< SIZE_MIB)
# on every target alike.
#
# Environment:
#   RUNTIME_S      seconds per fio job (default 8)
#   SIZE_MIB       backing file size (default 1024)
#   WORK_DIR       where the images live (default: a fresh dir under /var/tmp)
#   TARGETS        list from "nbdkit hadisk qemu-nbd hadisk-inline hadisk-blocking"
#                  (default "nbdkit hadisk qemu-nbd"); nbdkit is the baseline
#   ROUNDS         sweeps over all jobs and targets; figures are medians (default 1)
#   NICE           niceness for servers and fio alike, e.g. -10 to shield the
#                  measurement from other work on the machine (default 0)
#   RESULTS        markdown file whose "## NBD server" section is replaced
#                  (default bench/RESULTS.md; empty = do not write)
#   HADISK_BIN     the hadisk binary (default: cargo build --release -p hadisk)
#   SERVE_FILE_BIN the serve-file example (default: cargo build --release)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
RUNTIME_S=${RUNTIME_S:-8}
SIZE_MIB=${SIZE_MIB:-1024}
FIO_SIZE_MIB=$((SIZE_MIB - 16))
TARGETS=${TARGETS:-"nbdkit hadisk qemu-nbd"}
ROUNDS=${ROUNDS:-1}
NICE=${NICE:-0}
run_nice=(nice -n "$NICE")
RESULTS=${RESULTS-$here/RESULTS.md}
work=${WORK_DIR:-$(mktemp -d /var/tmp/nbd-compare.XXXXXX)}
mkdir -p "$work"
server_pid=""
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
hadisk_env=()

cleanup() {
    stop_server
    if [[ -z "${WORK_DIR:-}" ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT

stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}

build_hadisk

if [[ " $TARGETS " == *" serve-file "* && -z "${SERVE_FILE_BIN:-}" ]]; then
    (cd "$repo" && cargo build --release -q -p hadisk-nbd-server --example serve-file)
    SERVE_FILE_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/examples/serve-file
fi

hadisk() { "${hadisk_env[@]}" "$HADISK_BIN" "$@"; }

start_hadisk() { # mode img dir
    local mode=$1 img=$2 dir=$3
    mkdir -p "$dir/run"
    hadisk_env=(env HADISK_CONFIG="$dir/data.res" HADISK_NODE=bench HADISK_RUN_DIR="$dir/run")
    if [[ $mode != default ]]; then hadisk_env+=(HADISK_IO_MODE="$mode"); fi
    if [[ ! -f $dir/data.res ]]; then
        cat >"$dir/data.res" <<EOF
resource data {
  on bench { device /dev/nbd0; disk $img; address 127.0.0.1:17789; meta-disk internal; }
  on bench-peer { device /dev/nbd0; disk /nonexistent; address 127.0.0.1:17790; meta-disk internal; }
}
EOF
        hadisk create-md --force --yes data >"$dir/create-md.log" 2>&1
    fi
    # Started directly (env execs hadisk), so that $! is the daemon itself.
    "${run_nice[@]}" "${hadisk_env[@]}" "$HADISK_BIN" daemon >>"$dir/daemon.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do [[ -S $dir/run/hadisk.sock ]] && break; sleep 0.1; done
    hadisk up data >/dev/null
    hadisk primary --force data >/dev/null
    uri="nbd+unix:///data?socket=$dir/run/data.nbd"
}

start_target() { # name img sock
    local name=$1 img=$2 sock=$3
    case $name in
        hadisk) start_hadisk default "$img" "$work/$name" ;;
        hadisk-inline) start_hadisk inline "$img" "$work/$name" ;;
        hadisk-blocking) start_hadisk blocking "$img" "$work/$name" ;;
        serve-file)
            "${run_nice[@]}" "$SERVE_FILE_BIN" "$img" "$sock" --name data >"$work/$name.log" 2>&1 &
            server_pid=$!
            uri="nbd+unix:///data?socket=$sock" ;;
        nbdkit)
            "${run_nice[@]}" nbdkit -f -U "$sock" file "$img" >"$work/$name.log" 2>&1 &
            server_pid=$!
            uri="nbd+unix:///?socket=$sock" ;;
        qemu-nbd)
            "${run_nice[@]}" qemu-nbd -f raw --cache=writeback --aio=threads -t -e 8 -x data -k "$sock" "$img" \
                >"$work/$name.log" 2>&1 &
            server_pid=$!
            uri="nbd+unix:///data?socket=$sock" ;;
        *) echo "unknown target $name" >&2; exit 2 ;;
    esac
    wait_uri "$uri" 200
}

# Server CPU seconds (user+sys) of a PID, from /proc.
cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

# The tree measured, named before the run (binaries are built from it).
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$repo" diff --quiet HEAD -- replicator crates metadata 2>/dev/null; then
    commit="$commit (+ uncommitted changes in the working tree)"
fi

seed="$work/seed.img"
if [[ ! -f "$seed" ]]; then
    head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$seed"
fi

declare -A result
declare -A cpu
for target in $TARGETS; do
    cp "$seed" "$work/$target.img"
    cpu[$target]=0
done
for round in $(seq 1 "$ROUNDS"); do
    for entry in "${jobs[@]}"; do
        job=${entry%%|*}
        # Latency figures are fio's total latency (submission + completion):
        # clat alone depends on whether the server's thread happened to run
        # inside fio's send (then that time counts as slat), which differs
        # between servers (2026-11-30: hadisk clat 20.3 us at 42k QD1 IOPS,
        # nbdkit 12.4 us at 40k).
        args="${entry#*|} --lat_percentiles=1"
        for target in $TARGETS; do
            sync
            sock="$work/$target.sock"
            rm -f "$sock"
            start_target "$target" "$work/$target.img" "$sock"
            cpu_before=$(cpu_s "$server_pid")
            json="$work/$target.$job.$round.json"
            run_fio "$uri" "$job" "$args" "$json"
            cpu[$target]=$(python3 -c "print($(cpu_s "$server_pid") - $cpu_before + ${cpu[$target]})")
            stop_server
            figures=$(python3 - "$json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
w, r = j["write"], j["read"]
side = w if w["io_bytes"] > 0 else r
bw = side["bw_bytes"] / 1e9
iops = side["iops"]
lat = side["lat_ns"]
p99 = lat.get("percentile", {}).get("99.000000", 0) / 1000
print(f"{bw:.3f} {iops:.0f} {lat['mean']/1000:.1f} {p99:.1f}")
PY
)
            result[$target.$job]+="$figures;"
            echo "round $round $target $job: $figures" >&2
        done
    done
done
for target in $TARGETS; do
    rm -f "$work/$target.img"
    cpu[$target]=$(python3 -c "print(f'{${cpu[$target]} / $ROUNDS:.1f}')")
    for entry in "${jobs[@]}"; do
        job=${entry%%|*}
        # Median per figure over the rounds (the upper median for an even count).
        result[$target.$job]=$(python3 - "${result[$target.$job]}" <<'PY'
import sys
rows = [r.split() for r in sys.argv[1].split(";") if r]
print(" ".join(sorted(col, key=float)[len(col) // 2] for col in zip(*rows)))
PY
)
    done
done


table=$(
    echo "| workload | metric | ${TARGETS// / | } |"
    printf '|---|---|'; for _ in $TARGETS; do printf -- '---|'; done; echo
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
            base=""
            if [[ " $TARGETS " == *" nbdkit "* ]]; then
                base=$(echo "${result[nbdkit.$job]}" | cut -d' ' -f"$field")
            fi
            for target in $TARGETS; do
                v=$(echo "${result[$target.$job]}" | cut -d' ' -f"$field")
                if [[ -n "$base" && $target != nbdkit ]]; then
                    if [[ $label == *_us ]]; then r=$(ratio "$base" "$v"); else r=$(ratio "$v" "$base"); fi
                    row+=" $v ($r) |"
                else
                    row+=" $v |"
                fi
            done
            echo "$row"
        done
    done
    row="| all five jobs | server CPU s per round |"
    for target in $TARGETS; do row+=" ${cpu[$target]} |"; done
    echo "$row"
)
note="Ratios are to nbdkit (higher is better; for latency the ratio is nbdkit/target). \
$(date -u +%Y-%m-%dT%H:%MZ), hadisk at $commit, $(nproc) cores (shared), ${SIZE_MIB} MiB random-filled files on \
$(df -T "$work" | awk 'NR==2{print $2}'), page cache, fio ${FIO_SIZE_MIB} MiB range, \
${RUNTIME_S} s per job, median of ${ROUNDS} round(s), job-major order, niceness ${NICE} for \
servers and fio alike, fio ioengine=nbd over a Unix socket. hadisk = the real daemon as a \
standalone Primary (create-md, daemon, up, primary --force), default I/O mode (adaptive); \
hadisk-inline / hadisk-blocking = HADISK_IO_MODE=inline / blocking; serve-file = the NBD \
server crate alone (its example binary over the whole file, no replication core)."
echo
echo "$table"
echo
echo "$note"

if [[ -n "$RESULTS" ]]; then
    python3 - "$RESULTS" "$table" "$note" "$here/nbd-notes.md" <<'PY'
import sys, re, os
path, table, note = sys.argv[1], sys.argv[2], sys.argv[3]
section = "## NBD server\n\nProduced by `bench/nbd-compare.sh`.\n\n" + table + "\n\n" + note + "\n"
notes = sys.argv[4] if len(sys.argv) > 4 else ""
if notes and os.path.exists(notes):
    section += "\n" + open(notes).read().strip() + "\n"
text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
pattern = re.compile(r"## NBD server\n.*?(?=\n## |\Z)", re.S)
text = pattern.sub(lambda _: section.rstrip("\n"), text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text.rstrip("\n") + "\n")
PY
fi
