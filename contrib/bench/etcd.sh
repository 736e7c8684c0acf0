#!/usr/bin/env bash
# Handover on etcd at the shipped settings (stargate.lease.ttl, stargate.lease.interval and
# stargate.etcd.timeout left at their defaults): a two-node lab leasing through a
# three-member etcd cluster on loopback (Debian's /usr/bin/etcd 3.4, its default heartbeat
# and election timeout). N rounds (default 20) of `kill -9` of the leader's agent, then N
# rounds of a clean stop (SIGTERM: the agent revokes its etcd lease), each timed from the
# signal (sent at a random moment, straight to the agent) until the other node's /readyz
# answers 200, the killed agent started again between rounds. Prints every time, p50 and p99 (the nearest rank: the worst of fewer than 100).
# Goals (docs/ARCHITECTURE.md, The etcd lease): p99 <= 2.5 s after kill -9, <= 0.5 s after
# a clean stop.
# Usage: contrib/bench/etcd.sh [N]   (stargate-hook on PATH)
set -euo pipefail
n=${1:-20}
# shellcheck source=contrib/bench/lib.sh
. "$(dirname "$0")/lib.sh"
etcd=${ETCD:-/usr/bin/etcd}
net=127.79.$(( RANDOM % 200 + 20 ))
pids=()
trap '"${lab[@]}" down >/dev/null 2>&1; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cluster=m0=http://$net.101:2380,m1=http://$net.102:2380,m2=http://$net.103:2380
for i in 0 1 2; do
  ip=$net.10$((i + 1))
  "$etcd" --name "m$i" --data-dir "$work/m$i" --listen-client-urls "http://$ip:2379" \
    --advertise-client-urls "http://$ip:2379" --listen-peer-urls "http://$ip:2380" \
    --initial-advertise-peer-urls "http://$ip:2380" --initial-cluster "$cluster" \
    --initial-cluster-token "bench-$$" --pre-vote --log-level warn >"$work/m$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  curl -sf -m 1 "http://$net.101:2379/v3/kv/range" -d '{"key":"eA=="}' >/dev/null && break
  sleep 0.1
done
printf '[stargate]\n\tlock = etcd://%s:2379,%s:2379,%s:2379/stargate/bench\n' "$net.101" "$net.102" "$net.103" >"$work/extra"
lab_up "$net" "$work/extra"
ready() { # node -> 0 when /readyz is 200
  exec 3<>"/dev/tcp/$(cat "$work/lab/$1/ip")/8080" 2>/dev/null || return 1
  printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3
  local line; read -r line <&3 || true; exec 3<&-
  [[ $line == *" 200 "* ]]
}
# rounds SIGNAL: N handovers after that signal to the leader's agent; prints the times in ms.
rounds() {
  local i leader other start pid
  for ((i = 1; i <= n; i++)); do
    leader=$("${lab[@]}" leader)
    other=$([ "$leader" = a ] && echo b || echo a)
    pid=$(cat "$work/lab/$leader/agent.pid")
    # At a random moment of the leader's keep-alive interval and of etcd's expiry checks.
    sleep "0.$(printf %03d $((RANDOM % 1000)))"
    start=$(date +%s%N)
    kill "-$1" "$pid"
    until ready "$other"; do sleep 0.005; done
    echo $(( ($(date +%s%N) - start) / 1000000 ))
    "${lab[@]}" start "$leader" agent
    sleep 1 # the restarted agent publishes its state and settles as passive
  done
}
# rank P: the P-th percentile of the numbers on stdin (nearest rank).
rank() { sort -n | awk -v p="$1" '{ v[NR] = $1 } END { r = int((p * NR + 99) / 100); if (r < 1) r = 1; print v[r] }'; }
for what in kill9:KILL stop:TERM; do
  name=${what%%:*}
  times=$(rounds "${what#*:}")
  echo "handover after $name on etcd (ms): $(echo $times)"
  p50=$(echo "$times" | tr ' ' '\n' | rank 50)
  p99=$(echo "$times" | tr ' ' '\n' | rank 99)
  echo "p50: $p50 ms, p99: $p99 ms, runs: $n"
  echo "BENCH etcd_handover_${name}_p50 $p50 - ms"
  echo "BENCH etcd_handover_${name}_p99 $p99 - ms"
done
