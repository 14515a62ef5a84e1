#!/usr/bin/env bash
# Side-by-side NBD export benchmark: hadisk vs nbdkit's file plugin vs qemu-nbd.
#
# One run, same kind of backing file for every target (1 GiB of random data,
# no holes, on the same file system, through the page cache), fio
# ioengine=nbd against each, one markdown table with ratios to nbdkit.
#
# Environment:
#   HADISK_SERVER  command that serves "$IMG" as export "data" on unix socket "$SOCK"
#                  (default: the serve-file example; later e.g. the hadisk daemon)
#   RUNTIME_S      seconds per fio job (default 8)
#   SIZE_MIB       backing file size (default 1024)
#   WORK_DIR       where the images live (default: a fresh dir under /var/tmp)
#   TARGETS        subset of "hadisk nbdkit qemu-nbd" (default all three)
#   RESULTS        markdown file whose "## NBD export" section is replaced (default bench/RESULTS.md;
#                  empty = do not write)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
RUNTIME_S=${RUNTIME_S:-8}
SIZE_MIB=${SIZE_MIB:-1024}
TARGETS=${TARGETS:-"hadisk nbdkit qemu-nbd"}
RESULTS=${RESULTS-$here/RESULTS.md}
work=${WORK_DIR:-$(mktemp -d /var/tmp/nbd-compare.XXXXXX)}
mkdir -p "$work"
server_pid=""

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

if [[ -z "${HADISK_SERVER:-}" ]]; then
    target_dir=${CARGO_TARGET_DIR:-$repo/target}
    (cd "$repo" && cargo build --release -q -p hadisk-nbd-server --example serve-file)
    HADISK_SERVER="$target_dir/release/examples/serve-file \"\$IMG\" \"\$SOCK\" --name data"
fi

wait_socket() {
    for _ in $(seq 1 100); do
        if nbdinfo --size "$1" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "server did not come up on $1" >&2
    return 1
}

start_target() { # name img sock
    local name=$1 IMG=$2 SOCK=$3
    export IMG SOCK
    case $name in
        hadisk) eval "$HADISK_SERVER" >"$work/$name.log" 2>&1 & ;;
        nbdkit) nbdkit -f -U "$SOCK" file "$IMG" >"$work/$name.log" 2>&1 & ;;
        qemu-nbd) qemu-nbd -f raw --cache=writeback --aio=threads -t -e 8 -x data -k "$SOCK" "$IMG" \
                      >"$work/$name.log" 2>&1 & ;;
    esac
    server_pid=$!
    case $name in
        nbdkit) uri="nbd+unix:///?socket=$SOCK" ;;
        *) uri="nbd+unix:///data?socket=$SOCK" ;;
    esac
    wait_socket "$uri"
}

# fio job definitions: name|fio args
jobs=(
    "seqwrite_1m_qd8|--rw=write --bs=1m --iodepth=8"
    "randwrite_4k_qd32|--rw=randwrite --bs=4k --iodepth=32"
    "randread_4k_qd32|--rw=randread --bs=4k --iodepth=32"
    "randwrite_4k_qd1|--rw=randwrite --bs=4k --iodepth=1"
    "seqwrite_1m_fsync16|--rw=write --bs=1m --iodepth=1 --fsync=16"
)

run_fio() { # uri jobname args -> json file
    local uri=$1 job=$2 args=$3 out=$4
    # shellcheck disable=SC2086
    fio --name="$job" --ioengine=nbd --uri="$uri" --size="${SIZE_MIB}m" --time_based \
        --runtime="$RUNTIME_S" --ramp_time=1 --invalidate=0 --group_reporting \
        --output-format=json --output="$out" $args >/dev/null
}

declare -A result
for target in $TARGETS; do
    img="$work/$target.img"
    if [[ ! -f "$img" ]]; then
        head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$img"
    fi
    sock="$work/$target.sock"
    rm -f "$sock"
    start_target "$target" "$img" "$sock"
    for entry in "${jobs[@]}"; do
        job=${entry%%|*}
        args=${entry#*|}
        json="$work/$target.$job.json"
        run_fio "$uri" "$job" "$args" "$json"
        result[$target.$job]=$(python3 - "$json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
w, r = j["write"], j["read"]
side = w if w["io_bytes"] > 0 else r
bw = side["bw_bytes"] / 1e9
iops = side["iops"]
lat = side["clat_ns"]
p99 = lat.get("percentile", {}).get("99.000000", 0) / 1000
print(f"{bw:.3f} {iops:.0f} {lat['mean']/1000:.1f} {p99:.1f}")
PY
)
        echo "$target $job: ${result[$target.$job]}" >&2
    done
    stop_server
done

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}x' if b else 'n/a')" "$1" "$2"; }

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
)
note="Ratios are to nbdkit (higher is better; for latency the ratio is nbdkit/target). $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${SIZE_MIB} MiB random-filled files on $(df -T "$work" | awk 'NR==2{print $2}'), page cache, ${RUNTIME_S}s fio runs, fio ioengine=nbd."
echo
echo "$table"
echo
echo "$note"

if [[ -n "$RESULTS" ]]; then
    python3 - "$RESULTS" "$table" "$note" <<'PY'
import sys, re, os
path, table, note = sys.argv[1], sys.argv[2], sys.argv[3]
section = "## NBD export\n\nProduced by `bench/nbd-compare.sh`.\n\n" + table + "\n\n" + note + "\n"
text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
pattern = re.compile(r"## NBD export\n.*?(?=\n## |\Z)", re.S)
text = pattern.sub(lambda _: section.rstrip("\n"), text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text.rstrip("\n") + "\n")
PY
fi
