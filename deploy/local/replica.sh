#!/usr/bin/env bash
# Operates on one replica of a cluster that deploy/local/run-cluster.sh runs.
# usage: deploy/local/replica.sh --state-dir D COMMAND K
#   start K     start replica K again on its ports (after it stopped or crashed); waits until ready
#   stop K      SIGTERM: the replica drains (health 503 at once, so the balancer's checks take
#               it out; streams in flight finish) and exits; waits for the exit
#   kill K      SIGKILL (a crash): its streams in flight fail, the checks take it out
#   restart K   a rolling restart without a refused request: take K out of both balancer pools
#               first (admin state drain: no new requests, those in flight continue), then
#               stop, start, put it back and wait until the checks have it UP again
#   status      replicas.json and each replica's state in the balancer
# K counts from 0. Replicas keep their ports across restarts, so the balancer's servers and
# Prometheus's targets stay valid.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/cluster-lib.sh"

STATE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --state-dir) STATE=$2; shift 2 ;;
    *) break ;;
  esac
done
[ -n "$STATE" ] && [ -f "$STATE/cluster.env" ] || cl_die "usage: replica.sh --state-dir D start|stop|kill|restart K | status (D from run-cluster.sh)"
STATE=$(cd "$STATE" && pwd)
. "$STATE/cluster.env"
cmd=${1:-}
k=${2:-}
if [ "$cmd" != status ]; then
  [[ "$k" =~ ^[0-9]+$ ]] && ((k < N)) || cl_die "replica index must be 0..$((N - 1))"
fi

case "$cmd" in
  start) cl_start_replica "$k" ;;
  stop) cl_stop_replica "$k" TERM ;;
  kill) cl_stop_replica "$k" KILL ;;
  restart)
    cl_set_server_state "$k" drain
    sleep "$PRESTOP_DELAY"  # requests the balancer already sent it reach it before SIGTERM
    cl_stop_replica "$k" TERM
    cl_start_replica "$k"
    cl_set_server_state "$k" ready
    cl_wait_server "$k" '^UP$' 30
    cl_log "replica $k restarted and back in the pools"
    ;;
  status)
    cat "$STATE/replicas.json"
    for ((i = 0; i < N; i++)); do echo "r$i: $(cl_server_status "$i")"; done
    ;;
  *) cl_die "unknown command '$cmd' (start|stop|kill|restart|status)" ;;
esac
