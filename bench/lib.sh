# Pieces every comparison script under bench/ shares; sourced after the
# script has set `repo` (the checkout), `work` (its temp dir) and its knobs.
# One copy, so that every comparison runs the same fio jobs the same way and
# a fix to one (a wait bound, a fio flag) reaches all of them.

# Background processes a script started, stopped by PID at exit.
pids=()
stop_all() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    pids=()
}
# Stops everything and removes the work dir unless the caller chose it.
cleanup_work() {
    stop_all
    if [[ -z "${WORK_DIR:-}" ]]; then rm -rf "$work"; fi
}

# Sets HADISK_BIN to a release build of this checkout unless it was given.
build_hadisk() {
    if [[ -z "${HADISK_BIN:-}" ]]; then
        (cd "$repo" && cargo build --release -q -p hadisk)
        HADISK_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/hadisk
    fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# free_ports: two distinct free ports on one line (both sockets are held
# until both are known: the kernel may hand a released port out again).
free_ports() { python3 -c 'import socket; a=socket.socket(); b=socket.socket(); a.bind(("127.0.0.1",0)); b.bind(("127.0.0.1",0)); print(a.getsockname()[1], b.getsockname()[1])'; }

# wait_uri URI [TRIES]: until an NBD server answers on URI (TRIES × 0.1 s).
wait_uri() {
    for _ in $(seq 1 "${2:-300}"); do
        if nbdinfo --size "$1" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "server did not come up on $1" >&2
    return 1
}

# The workloads of shared/testing/peers.md: name|fio args.
jobs=(
    "seqwrite_1m_qd8|--rw=write --bs=1m --iodepth=8"
    "randwrite_4k_qd32|--rw=randwrite --bs=4k --iodepth=32"
    "randread_4k_qd32|--rw=randread --bs=4k --iodepth=32"
    "randwrite_4k_qd1|--rw=randwrite --bs=4k --iodepth=1"
    "seqwrite_1m_fsync16|--rw=write --bs=1m --iodepth=1 --fsync=16"
)

# run_fio URI JOB ARGS OUT: one job, JSON to OUT; RUNTIME_S and FIO_SIZE_MIB
# from the caller, prefixed by the caller's `run_nice` array when it has one.
run_fio() {
    # shellcheck disable=SC2086
    ${run_nice[@]+"${run_nice[@]}"} fio --name="$2" --ioengine=nbd --uri="$1" --size="${FIO_SIZE_MIB}m" \
        --time_based --runtime="$RUNTIME_S" --ramp_time=1 --invalidate=0 --group_reporting \
        --output-format=json --output="$4" $3 >/dev/null
}

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}x' if b else 'n/a')" "$1" "$2"; }

# --- A pair of hadisk nodes under $work (alpha, beta; config $work/pair.res,
# or $res when the caller sets it: several pairs side by side).

# The commit measured (and whether the code had uncommitted changes).
tree_id() {
    local t
    t=$(cd "$repo" && git rev-parse --short HEAD)
    if [[ -n $(cd "$repo" && git status --porcelain -- crates replicator) ]]; then
        t+=" (with uncommitted changes in crates/ or replicator/)"
    fi
    echo "$t"
}

py() { python3 -c "$@"; }
now() { date +%s.%N; }

# hadisk NODE_DIR NODE ARGS...: the CLI with a node's environment.
hadisk() {
    local dir=$1 node=$2
    shift 2
    HADISK_CONFIG="${res:-$work/pair.res}" HADISK_NODE=$node HADISK_RUN_DIR="$dir/run" "$HADISK_BIN" "$@"
}

# start_daemon NODE_DIR NODE: the node's daemon in the background (its log
# at NODE_DIR/daemon.log, level DAEMON_LOG, default warn), once its control
# socket is there.
start_daemon() {
    local dir=$1 node=$2
    mkdir -p "$dir/run"
    HADISK_CONFIG="${res:-$work/pair.res}" HADISK_NODE=$node HADISK_RUN_DIR="$dir/run" RUST_LOG=${DAEMON_LOG:-warn} \
        "$HADISK_BIN" daemon >>"$dir/daemon.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do [[ -S $dir/run/hadisk.sock ]] && break; sleep 0.1; done
}

# field EXPR: a Python expression on r, alpha's resource in `status --json`.
field() {
    hadisk "$work/alpha" alpha status --json | py "import json,sys; r=json.load(sys.stdin)['resources'][0]; print($1)"
}

# up_pair NET_OPTS: fresh metadata on $work/a.img and $work/b.img, both
# daemons started, `up`, and connected (sets port_a, port_b).
up_pair() {
    read -r port_a port_b < <(free_ports)
    cat >"$work/pair.res" <<RES
resource data {
  net { protocol C; $1 }
  on alpha { device /dev/nbd0; disk $work/a.img; address 127.0.0.1:$port_a; meta-disk internal; }
  on beta { device /dev/nbd0; disk $work/b.img; address 127.0.0.1:$port_b; meta-disk internal; }
}
RES
    rm -rf "${work:?}/alpha" "${work:?}/beta"
    hadisk "$work/alpha" alpha create-md --force --yes data >/dev/null
    hadisk "$work/beta" beta create-md --force --yes data >/dev/null
    start_daemon "$work/alpha" alpha
    start_daemon "$work/beta" beta
    hadisk "$work/alpha" alpha up data >/dev/null
    hadisk "$work/beta" beta up data >/dev/null
    until [[ $(field "r['peer']['connection']") == Connected ]]; do sleep 0.1; done
}
