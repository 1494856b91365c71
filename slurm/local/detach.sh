# shellcheck shell=bash
# detach LOGFILE CMD ARGS...: start CMD in the background, in its own session, from /, with every
# standard stream redirected (stdin from /dev/null, stdout+stderr appended to LOGFILE).
# The redirections apply to the whole backgrounded subshell, which execs CMD: nothing keeps the
# caller's stdout open, so `bash slurm/local/start.sh | tail` returns as soon as start.sh ends.
# (The old form `(cd / && setsid CMD >LOG 2>&1 &)` redirected CMD only: the forked subshell that
# ran `cd / && ...` held the caller's stdout for as long as CMD ran.)
detach() {
  local log=$1; shift
  (cd / && exec setsid "$@") </dev/null >>"$log" 2>&1 &
}
