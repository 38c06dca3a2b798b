# Shell helpers for tests that drive `iris serve` as a process (sourced, not run): `check`
# counts results; `start NAME ARGS...` starts a server on free loopback ports, sets
# $grpc_port and $http_port once both listeners are logged, and fails the whole test when
# the server exits or is not ready within 60 s (a block that cannot start never skips).
# The caller sets $iris and $work; servers are killed when the test exits.
passed=0 failed=0
check() { if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "ok   $1"; else failed=$((failed + 1)); echo "FAIL $1"; fi; }
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done' EXIT

start() {
  local name=$1; shift
  "$iris" serve --host 127.0.0.1 --port 0 --http-port -1 "$@" > "$work/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 600); do
    if grep -q "serving .* on " "$work/$name.log" && grep -q "http listening on" "$work/$name.log"; then
      grpc_port=$(sed -n 's/.*serving [^ ]* on [0-9.]*:\([0-9]*\).*/\1/p' "$work/$name.log" | head -1)
      http_port=$(sed -n 's/.*http listening on [0-9.]*:\([0-9]*\).*/\1/p' "$work/$name.log" | head -1)
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "FAIL: $name exited before it was ready"; cat "$work/$name.log"; exit 1; }
    sleep 0.1
  done
  echo "FAIL: $name not ready after 60 s"; cat "$work/$name.log"; exit 1
}

# The closing line, and the exit status.
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
}
