#!/bin/sh
# resource.d/ganesha, called as `ganesha NAME start|stop|status` by the
# agent (inside the node's network namespace): nfs-ganesha (FSAL_VFS)
# serving @MNT@/export as /data on the VIP @VIP@, its NFSv4 recovery
# directory on the replicated filesystem (so the next node knows the
# clients). GRACE=0 means Graceless.
# Invariants: the VIP is up before this starts (Bind_addr); ganesha's PID
# is kept in ganesha.pid (killed by that PID only); `ready` holds the epoch
# ms at which the log said NFS SERVER INITIALIZED (the benchmark's mark).
d=@HA@
mnt=@MNT@
conf=$d/ganesha.conf
log=$d/ganesha.log
grace=@GRACE@
case "$2" in
start)
  mkdir -p "$mnt/export" "$mnt/ganesha-recov" || exit 1
  if [ "$grace" = 0 ]; then gl="Graceless = true; Lease_Lifetime = 60;"
  else gl="Graceless = false; Grace_Period = $grace; Lease_Lifetime = $grace;"; fi
  cat > "$conf" <<CONF
NFS_CORE_PARAM {
    Protocols = 4;
    Bind_addr = @VIP@;
    NFS_Port = 2049;
    Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false;
    Plugins_Dir = /usr/lib/x86_64-linux-gnu/ganesha;
}
NFS_KRB5 { Active_krb5 = false; }
NFSv4 {
    $gl
    RecoveryBackend = fs;
    RecoveryRoot = $mnt/ganesha-recov;
    Only_Numeric_Owners = true;
}
EXPORT {
    Export_Id = 1;
    Path = $mnt/export;  Pseudo = /data;
    Access_Type = RW;  Squash = No_Root_Squash;  SecType = sys;  Transports = TCP;
    FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
CONF
  : > "$log"; rm -f "$d/ready"
  setsid ganesha.nfsd -F -f "$conf" -L "$log" -p "$d/ganesha.pidfile" -N NIV_EVENT </dev/null >/dev/null 2>&1 &
  pid=$!
  echo $pid > "$d/ganesha.pid"
  i=0; until grep -q 'NFS SERVER INITIALIZED' "$log"; do
    kill -0 $pid 2>/dev/null || { echo "ganesha exited: $(tail -3 "$log")" >&2; exit 1; }
    i=$((i+1)); [ $i -gt 1000 ] && { echo "ganesha not initialized after 10 s" >&2; exit 1; }
    sleep 0.01
  done
  date +%s%3N > "$d/ready"; exit 0 ;;
stop)
  [ -s "$d/ganesha.pid" ] || exit 0
  pid=$(cat "$d/ganesha.pid")
  kill -TERM "$pid" 2>/dev/null
  i=0; while kill -0 "$pid" 2>/dev/null; do
    i=$((i+1)); [ $i -eq 300 ] && kill -KILL "$pid" 2>/dev/null
    [ $i -gt 400 ] && { echo "ganesha $pid does not exit" >&2; exit 1; }
    sleep 0.05
  done
  rm -f "$d/ganesha.pid"; exit 0 ;;
status)
  [ -s "$d/ganesha.pid" ] && kill -0 "$(cat "$d/ganesha.pid")" 2>/dev/null || exit 3 ;;
esac
