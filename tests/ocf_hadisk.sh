#!/bin/sh
# Runs every action of ocf/hadisk against a real standalone `hadisk daemon`
# and checks the OCF exit codes and the master scores (a stand-in
# crm_master on PATH records its arguments: Pacemaker is not installed).
# Usage: ocf_hadisk.sh HADISK_BIN OCF_AGENT. Cleans up on any exit.
set -u
HADISK_BIN=$(realpath "$1")
AGENT=$(realpath "$2")
WORK=$(mktemp -d /tmp/hadisk-ocf.XXXXXX)
DAEMON_PID=""
cleanup() {
    rc=$?
    [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    if [ $rc -ne 0 ]; then
        echo "--- daemon log:"; cat "$WORK/daemon.log" 2>/dev/null
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two distinct free ports: both sockets are held until both are known (the
# kernel may hand a just-released port out again, and a resource whose two
# hosts share an address is refused).
free_ports() {
    /usr/bin/python3 -c 'import socket; a=socket.socket(); b=socket.socket(); a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0)); print(a.getsockname()[1], b.getsockname()[1])'
}

FAILED=0
# expect CODE ACTION: runs the agent, compares its exit code.
expect() {
    want=$1; shift
    "$AGENT" "$@" >"$WORK/out" 2>"$WORK/err"
    got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL: $* exited $got, expected $want"; sed 's/^/  stderr: /' "$WORK/err"
        FAILED=1
    else
        echo "ok: $* -> $got"
    fi
}
# expect_score WORDS: the last crm_master call had these arguments.
expect_score() {
    last=$(tail -n 1 "$WORK/crm_master.log" 2>/dev/null)
    if [ "$last" != "$*" ]; then
        echo "FAIL: last crm_master call '$last', expected '$*'"; FAILED=1
    else
        echo "ok: crm_master $*"
    fi
}

mkdir -p "$WORK/bin" "$WORK/run"
cat >"$WORK/bin/crm_master" <<EOS
#!/bin/sh
echo "\$*" >> "$WORK/crm_master.log"
EOS
chmod 755 "$WORK/bin/crm_master"
ln -s "$HADISK_BIN" "$WORK/bin/hadisk"
PATH=$WORK/bin:$PATH
export PATH

truncate -s 64M "$WORK/disk.img"
read -r PORT_A PORT_B <<EOP
$(free_ports)
EOP
cat >"$WORK/data.res" <<EOR
resource data {
  on alpha { device /dev/nbd0; disk $WORK/disk.img; address 127.0.0.1:$PORT_A; meta-disk internal; }
  on beta { device /dev/nbd0; disk /nonexistent; address 127.0.0.1:$PORT_B; meta-disk internal; }
}
EOR
export OCF_RESKEY_config="$WORK/data.res" OCF_RESKEY_run_dir="$WORK/run" OCF_RESKEY_node=alpha
export HADISK_CONFIG="$WORK/data.res" HADISK_RUN_DIR="$WORK/run" HADISK_NODE=alpha
hadisk create-md data >/dev/null || { echo "FAIL: create-md"; exit 1; }

# --- without a resource name, and the informational actions
expect 0 meta-data
/usr/bin/python3 -c 'import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]); assert d.documentElement.getAttribute("name") == "hadisk"; acts = {a.getAttribute("name") for a in d.getElementsByTagName("action")}; assert {"start","stop","promote","demote","monitor","notify","meta-data","validate-all"} <= acts, acts' "$WORK/out" \
    && echo "ok: meta-data is XML with every action" || { echo "FAIL: meta-data XML"; FAILED=1; }
expect 6 validate-all
expect 0 stop        # unconfigured: stop succeeds (never fence for that)
expect 7 monitor
expect 3 frobnicate
expect 2
export OCF_RESKEY_resource=data
expect 0 validate-all
OCF_RESKEY_hadisk=/nonexistent/hadisk expect 5 validate-all

# --- no daemon: not running; start fails
expect 7 monitor
expect 1 start
expect 0 stop

"$HADISK_BIN" daemon >"$WORK/daemon.log" 2>&1 </dev/null &
DAEMON_PID=$!
i=0
until hadisk status >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 200 ] && { echo "FAIL: the daemon did not answer"; exit 1; }
    sleep 0.05
done

# --- the resource's life as a promotable clone
expect 7 monitor
expect 0 start
expect 0 monitor
expect_score "-Q -l reboot -D"          # fresh metadata: Inconsistent, not promotable
expect 0 start                          # already started: success
OCF_RESKEY_tries=1 expect 1 promote     # Inconsistent data is refused
hadisk primary --force data >/dev/null && hadisk secondary data >/dev/null
expect 0 monitor
expect_score "-Q -l reboot -v 10000"    # UpToDate Secondary: promotable
expect 0 notify
expect 0 promote
expect 8 monitor
expect 0 promote                        # already Primary
expect 0 demote
expect 0 monitor
expect 0 demote                         # already Secondary
expect 0 promote
expect 0 stop                           # demotes, then down
expect 7 monitor
expect_score "-Q -l reboot -D"
expect 0 stop                           # stopped: success

# --- Debian's ocf-tester (resource-agents; scripts/install-deps.sh installs
# it): its own sequence of every action, promotable-clone checks included.
if ! command -v ocf-tester >/dev/null 2>&1; then
    echo "FAIL: ocf-tester is not installed: run scripts/install-deps.sh (resource-agents, libxml2-utils)"
    FAILED=1
else
    if ocf-tester -v -n hadisk-ocf-test -o resource=data -o hadisk="$HADISK_BIN" \
        -o config="$WORK/data.res" -o run_dir="$WORK/run" -o node=alpha \
        "$AGENT" >"$WORK/tester.log" 2>&1; then
        echo "ok: ocf-tester passed: $(grep -c '^Testing' "$WORK/tester.log") steps"
        grep '^Testing' "$WORK/tester.log" | sed 's/^/  /'
    else
        echo "FAIL: ocf-tester"; sed 's/^/  /' "$WORK/tester.log"; FAILED=1
    fi
fi

exit $FAILED
