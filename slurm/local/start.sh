#!/usr/bin/env bash
# Start (installing and configuring it first if needed) a single-node SLURM cluster on this host:
# MariaDB -> munge -> slurmdbd -> slurmctld -> slurmd, then wait until the node is idle and
# `sacct` answers. Idempotent: on a running, healthy cluster it returns at once.
# Needs root and, on a fresh machine, apt (Debian/Ubuntu packages). See slurm/local/README.md.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONF_DIR=${SLURM_LOCAL_CONF_DIR:-/etc/slurm}
RUN=/run/slurm-local
SPOOL=/var/spool/slurm-local
LOG=/var/log/slurm-local
CLUSTER=${SLURM_LOCAL_CLUSTER:-avalanche}
DBPASS=${SLURM_LOCAL_DBPASS:-avalanche-local}   # MariaDB user 'slurm'@'localhost' only; test cluster
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-120}             # seconds to wait for each daemon
# shellcheck source=slurm/local/detach.sh
source "$HERE/detach.sh"
say() { echo "[slurm-local] $*"; }
die() { echo "[slurm-local] error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts system daemons): sudo bash $0"

healthy() {
  command -v sacct >/dev/null 2>&1 || return 1
  timeout 10 scontrol ping 2>/dev/null | grep -q "UP" || return 1
  local st; st=$(timeout 10 sinfo -h -N -o %T 2>/dev/null | head -1)
  case "$st" in idle|mixed|allocated|completing) ;; *) return 1 ;; esac
  timeout 10 sacct -n -X -S now >/dev/null 2>&1 || return 1
}
# -- 1. packages --------------------------------------------------------------------------------
need=()
for pair in slurmctld:slurm-wlm slurmd:slurm-wlm sbatch:slurm-client sacct:slurm-client \
            slurmdbd:slurmdbd munged:munge mariadbd:mariadb-server; do
  bin=${pair%%:*}; pkg=${pair##*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get: install SLURM, munge, slurmdbd, MariaDB by hand"
  pkgs=$(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')
  say "installing $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $pkgs >/dev/null
fi
export PATH="/usr/sbin:/sbin:$PATH"

# -- 2. configuration for this host -------------------------------------------------------------
HOST=$(hostname -s)
# slurmd, srun and DDP rendezvous (MASTER_ADDR = the node name) must resolve the host name.
getent hosts "$HOST" >/dev/null 2>&1 || echo "127.0.0.1 $HOST" >> /etc/hosts
CPUS=$(nproc); [ "$CPUS" -ge 4 ] || CPUS=4
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
mkdir -p "$CONF_DIR" "$RUN" "$SPOOL/ctld" "$SPOOL/d" "$LOG"
render() {  # template -> file, reporting whether it changed
  local tmp; tmp=$(mktemp)
  sed -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" \
      -e "s|@RUN@|$RUN|g" -e "s|@SPOOL@|$SPOOL|g" -e "s|@LOG@|$LOG|g" -e "s|@DBPASS@|$DBPASS|g" "$1" > "$tmp"
  if ! cmp -s "$tmp" "$2"; then mv "$tmp" "$2"; chmod "$3" "$2"; CHANGED=1; else rm -f "$tmp"; fi
}
CHANGED=0
render "$HERE/slurm.conf.in" "$CONF_DIR/slurm.conf" 644
render "$HERE/slurmdbd.conf.in" "$CONF_DIR/slurmdbd.conf" 600
[ -f "$CONF_DIR/cgroup.conf" ] || cp "$HERE/cgroup.conf" "$CONF_DIR/cgroup.conf"
if [ "$CHANGED" = 0 ] && healthy; then say "already running (node $(sinfo -h -N -o '%N %T' | head -1))"; exit 0; fi
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "$CHANGED" = 1 ] && { alive "$RUN/slurmctld.pid" || alive "$RUN/slurmd.pid" || alive "$RUN/slurmdbd.pid"; }; then
  say "configuration changed: restarting the SLURM daemons"
  bash "$HERE/stop.sh" --keep-db
fi
wait_for() {  # description, command...
  local what=$1; shift; local t=0
  until "$@" >/dev/null 2>&1; do
    t=$((t + 1)); [ "$t" -le "$TIMEOUT" ] || die "$what did not come up in ${TIMEOUT}s (logs: $LOG/)"
    sleep 1
  done
}

# -- 3. MariaDB ---------------------------------------------------------------------------------
if ! mysqladmin --protocol=socket ping >/dev/null 2>&1; then
  say "starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  detach "$LOG/mariadb.out" mysqld_safe --user=mysql
  wait_for "MariaDB" mysqladmin --protocol=socket ping
fi
mysql --protocol=socket -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
  ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# -- 4. munge -----------------------------------------------------------------------------------
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munge"
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then mungekey --create --keyfile=/etc/munge/munge.key; fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 700 /etc/munge; chmod 600 /etc/munge/munge.key; chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged </dev/null >>"$LOG/munged.out" 2>&1
  wait_for "munge" sh -c 'munge -n | unmunge'
fi

# -- 5. slurmdbd, cluster registration ----------------------------------------------------------
if ! alive "$RUN/slurmdbd.pid"; then
  say "starting slurmdbd"
  slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1
  wait_for "slurmdbd" sacctmgr -n show cluster
fi
if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
  say "registering cluster $CLUSTER in the accounting database"
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

# -- 6. slurmctld, slurmd -----------------------------------------------------------------------
if ! alive "$RUN/slurmctld.pid"; then
  say "starting slurmctld"
  slurmctld </dev/null >>"$LOG/slurmctld.out" 2>&1
  wait_for "slurmctld" sh -c 'scontrol ping | grep -q UP'
fi
if ! alive "$RUN/slurmd.pid"; then
  say "starting slurmd"
  slurmd </dev/null >>"$LOG/slurmd.out" 2>&1
fi
node_ready() {
  local st; st=$(sinfo -h -N -o %T 2>/dev/null | head -1)
  case "$st" in
    idle|mixed|allocated|completing) return 0 ;;
    down*|drain*|fail*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true; return 1 ;;
    *) return 1 ;;
  esac
}
wait_for "node $HOST (idle)" node_ready
wait_for "sacct" sacct -n -X -S now
say "up: cluster $CLUSTER, node $HOST, $CPUS CPUs, ${MEM_MB} MB (logs: $LOG/)"
