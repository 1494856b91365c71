#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by slurm/local/start.sh.
#   --keep-db   leave MariaDB and munge running (used by start.sh after a configuration change)
set -euo pipefail
RUN=/run/slurm-local
KEEP_DB=0; [ "${1:-}" = "--keep-db" ] && KEEP_DB=1
say() { echo "[slurm-local] $*"; }
stop_pid() {  # name, pid file
  local f=$2
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping $1 ($pid)"; kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
stop_pid slurmd "$RUN/slurmd.pid"
stop_pid slurmctld "$RUN/slurmctld.pid"
stop_pid slurmdbd "$RUN/slurmdbd.pid"
if [ "$KEEP_DB" = 0 ]; then
  stop_pid munged /run/munge/munged.pid
  if mysqladmin --protocol=socket ping >/dev/null 2>&1; then say "stopping MariaDB"; mysqladmin --protocol=socket shutdown; fi
fi
