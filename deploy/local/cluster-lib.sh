# shellcheck shell=bash
# Shared by run-cluster.sh and replica.sh: the state directory's layout and the replica and
# balancer operations. Sourced, not run.
#
# State directory D:
#   cluster.env        settings written by run-cluster.sh (bash `declare -p`), read by replica.sh
#   cluster.json       the balancer's ports, stats socket and pids, Prometheus's port
#   replicas.json      [{index, name, pid, running, host, grpc_port, http_port, log}, ...]
#   replica-K.pid      replica K's last pid;  replica-K.ports: "GRPC HTTP" once known
#   replica-K.log      replica K's log (appended across restarts)
#   balancer.pid       HAProxy's pid;  haproxy.cfg, haproxy.log, haproxy.sock
#   prometheus.pid, prometheus.yml, prometheus.log, prometheus-data/   with --prometheus
#   ready              exists while the cluster serves

cl_die() { echo "${0##*/}: $*" >&2; exit 1; }
cl_log() { echo "${0##*/}: $*"; }

# True if PID is a running `iris serve` (guards against a reused pid).
cl_is_replica() {
  local pid=$1
  [ -n "$pid" ] && [ "$pid" -gt 0 ] 2>/dev/null && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q ' serve ' || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

cl_replica_pid() { cat "$STATE/replica-$1.pid" 2>/dev/null || echo 0; }

# Rewrites replicas.json from the per-replica files (under a lock: replica.sh may run
# concurrently for different replicas).
cl_write_replicas_json() {
  (
    flock 9
    local k pid ports running sep="" out="["
    for ((k = 0; k < N; k++)); do
      pid=$(cl_replica_pid "$k")
      ports=$(cat "$STATE/replica-$k.ports" 2>/dev/null || echo "0 0")
      running=false
      cl_is_replica "$pid" && running=true
      out+="$sep"$'\n'"  {\"index\": $k, \"name\": \"r$k\", \"pid\": $pid, \"running\": $running, \"host\": \"$HOST\", \"grpc_port\": ${ports% *}, \"http_port\": ${ports#* }, \"log\": \"$STATE/replica-$k.log\"}"
      sep=","
    done
    printf '%s\n]\n' "$out" >"$STATE/replicas.json.tmp"
    mv "$STATE/replicas.json.tmp" "$STATE/replicas.json"
  ) 9>"$STATE/.lock"
}

# Starts replica K (on its recorded ports once it has some) and waits until both of its
# listeners are up; fails if it exits or takes longer than $START_TIMEOUT seconds.
cl_start_replica() {
  local k=$1 gport=0 hport=-1 offset pid t0
  local log="$STATE/replica-$k.log"
  if cl_is_replica "$(cl_replica_pid "$k")"; then cl_die "replica $k already runs (pid $(cl_replica_pid "$k"))"; fi
  if [ -s "$STATE/replica-$k.ports" ]; then read -r gport hport <"$STATE/replica-$k.ports"; fi
  touch "$log"
  offset=$(stat -c %s "$log")
  echo "=== replica $k starting at $(date -u +%FT%TZ)" >>"$log"
  # Its own session: a Ctrl-C in the terminal reaches run-cluster.sh only, which drains.
  setsid "$IRIS" serve --host "$HOST" --port "$gport" --http-port "$hport" --model "$MODEL" \
    "${EXTRA[@]}" >>"$log" 2>&1 </dev/null &
  pid=$!
  disown "$pid" 2>/dev/null || true  # stopped by pid from the state files, not as a job
  echo "$pid" >"$STATE/replica-$k.pid"
  t0=$SECONDS
  while :; do
    local tail_text
    tail_text=$(tail -c +"$((offset + 1))" "$log")
    local g h
    g=$(sed -n 's/.*serving .* on [^ ]*:\([0-9][0-9]*\) (.*/\1/p' <<<"$tail_text" | head -1)
    h=$(sed -n 's/.*http listening on [^ ]*:\([0-9][0-9]*\) .*/\1/p' <<<"$tail_text" | head -1)
    if [ -n "$g" ] && [ -n "$h" ]; then
      echo "$g $h" >"$STATE/replica-$k.ports"
      break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      cl_write_replicas_json
      cl_die "replica $k exited before it was ready; see $log"
    fi
    if ((SECONDS - t0 > START_TIMEOUT)); then
      kill -KILL "$pid" 2>/dev/null || true
      cl_write_replicas_json
      cl_die "replica $k not ready after ${START_TIMEOUT}s; see $log"
    fi
    sleep 0.1
  done
  cl_write_replicas_json
  cl_log "replica $k ready: pid $pid, grpc $HOST:$g, http $HOST:$h"
}

# Starts replicas 0..N-1 at the same time; fails if any of them fails.
cl_start_all() {
  local k pids=() rc=0
  for ((k = 0; k < N; k++)); do
    cl_start_replica "$k" &
    pids+=($!)
  done
  for k in "${pids[@]}"; do wait "$k" || rc=1; done
  cl_write_replicas_json
  [ "$rc" -eq 0 ] || cl_die "a replica did not start"
}

# Sends SIGNAL to replica K and waits until it has exited (a drain takes up to the drain
# timeout; past that plus a margin it is killed).
cl_stop_replica() {
  local k=$1 sig=${2:-TERM} pid t0
  pid=$(cl_replica_pid "$k")
  if ! cl_is_replica "$pid"; then cl_write_replicas_json; return 0; fi
  kill "-$sig" "$pid" 2>/dev/null || true
  t0=$SECONDS
  while cl_is_replica "$pid"; do
    if ((SECONDS - t0 > ${DRAIN_TIMEOUT%.*} + 10)); then
      cl_log "replica $k (pid $pid) still running after its drain timeout; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.05
  done
  cl_write_replicas_json
}

# The balancer's runtime API.
cl_haproxy() { printf '%s\n' "$1" | socat -t 2 stdio "unix-connect:$STATE/haproxy.sock"; }

# "UP", "DOWN", "DRAIN", "MAINT", "UP 1/2"... of replica K in the HTTP pool.
cl_server_status() {
  cl_haproxy "show stat" | awk -F, -v s="r$1" '$1 == "http_replicas" && $2 == s {print $18}'
}

# Waits until replica K's state in the balancer matches the pattern (bounded).
cl_wait_server() {
  local k=$1 pattern=$2 limit=${3:-30} t0=$SECONDS st=""
  while ((SECONDS - t0 <= limit)); do
    st=$(cl_server_status "$k" 2>/dev/null || true)
    if [[ "$st" =~ $pattern ]]; then return 0; fi
    sleep 0.1
  done
  cl_die "replica $k is '$st' in the balancer, not $pattern, after ${limit}s"
}

# Puts replica K in both pools into an admin state: drain (no new requests, the ones in
# flight continue), ready.
cl_set_server_state() {
  local k=$1 state=$2 be out
  for be in http_replicas grpc_replicas; do
    out=$(cl_haproxy "set server $be/r$k state $state")
    [ -z "$out" ] || cl_die "set server $be/r$k state $state: $out"
  done
}
