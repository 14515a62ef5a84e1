#!/bin/sh
# resource.d/nbdloop, called as `nbdloop RES start|stop|status` by the
# agent: the daemon's NBD export of RES (unix socket @RUN@/RES.nbd) as a
# loop device, through nbdfuse (no kernel nbd on this machine).
# Invariants: nbdfuse runs in its own session (it must outlive this script
# and not hold the agent's pipes); its PID is kept in nbdfuse.RES.pid and the
# loop device in loop.RES (symlinked as dev.RES), so a crash test can kill and detach exactly them.
d=@HA@
fuse=$d/fuse.$1
case "$2" in
start)
  # a FUSE mount left by an nbdfuse that died (a crash) fails stat: drop it
  stat "$fuse" >/dev/null 2>&1 || umount -l "$fuse" 2>/dev/null
  mkdir -p "$fuse"
  if ! mountpoint -q "$fuse"; then
    # setsid without -f: not a group leader here, so it execs and $! is nbdfuse
    setsid nbdfuse "$fuse" --unix "@RUN@/$1.nbd" </dev/null >/dev/null 2>&1 &
    echo $! > "$d/nbdfuse.$1.pid"
    i=0; until [ -e "$fuse/nbd" ]; do
      i=$((i+1)); [ $i -gt 200 ] && { echo "nbdfuse did not start on $fuse" >&2; exit 1; }
      sleep 0.02
    done
  fi
  if ! { [ -s "$d/loop.$1" ] && losetup "$(cat "$d/loop.$1")" >/dev/null 2>&1; }; then
    losetup -f --show "$fuse/nbd" > "$d/loop.$1" || exit 1
  fi
  # a stable name for Filesystem::$d/dev.RES (the loop number varies;
  # LABEL= lookups through libblkid's cache were flaky with loop devices
  # coming and going)
  ln -sfn "$(cat "$d/loop.$1")" "$d/dev.$1"; exit 0 ;;
stop)
  if [ -s "$d/loop.$1" ]; then
    l=$(cat "$d/loop.$1"); losetup -d "$l" 2>/dev/null
    i=0; while losetup "$l" >/dev/null 2>&1; do
      i=$((i+1)); [ $i -gt 100 ] && { echo "$l still attached (the fs mounted elsewhere?)" >&2; exit 1; }
      sleep 0.05
    done
    rm -f "$d/loop.$1" "$d/dev.$1"
  fi
  if mountpoint -q "$fuse"; then umount "$fuse" || exit 1; fi
  rm -f "$d/nbdfuse.$1.pid"
  exit 0 ;;
status)
  [ -s "$d/loop.$1" ] && losetup "$(cat "$d/loop.$1")" >/dev/null 2>&1 || exit 3 ;;
esac
