#!/usr/bin/env bash
# Reading your own writes, and a replica fed by a replica.
# 1. A two-node lab, a clone reading through stargate:: with stargate.readFrom=replica, the
#    replica current: after one push, N fetches of main each with read-your-writes on (the
#    default: one /applied question to the replica first) and off, alternating, and plain
#    `git fetch` from the replica's git:// URL; medians.
# 2. A three-node lab, leader a -> b -> c (stargate.c.upstream = b), `git kv set` on the leader
#    at RATE writes/s for SECONDS: lag p50/p99 on c (end to end) and on b, as each reports it.
# Usage: contrib/bench/reads.sh [N] [SECONDS] [RATE]   (stargate-hook and git-remote-stargate on PATH)
set -euo pipefail
n=${1:-20} seconds=${2:-60} rate=${3:-4}
. "$(dirname "$0")/lib.sh"
command -v git-remote-stargate >/dev/null || { echo "git-remote-stargate is not on PATH" >&2; exit 1; }

lab_up 127.79.21
"${lab[@]}" client-config >>"$GIT_CONFIG_GLOBAL"
git clone -q stargate::a,b/kv.git "$work/c"
cd "$work/c"
git config stargate.readFrom replica
echo 1 >f && git add f && git commit -q -m one && git push -q origin HEAD:refs/heads/main
direct=git://$(cat "$work/lab/$replica/ip")/kv.git
sleep 1
ms() { echo $(( ($(date +%s%N) - $1) / 1000 )); }
on="" off="" plain="" from=""
for ((i = 0; i < n; i++)); do
  start=$(date +%s%N); git fetch -q origin +refs/heads/main:refs/remotes/on/main; on+="$(ms "$start")"$'\n'
  start=$(date +%s%N); git -c stargate.readYourWrites=false fetch -q origin +refs/heads/main:refs/remotes/off/main; off+="$(ms "$start")"$'\n'
  start=$(date +%s%N); git fetch -q "$direct" +refs/heads/main:refs/remotes/plain/main; plain+="$(ms "$start")"$'\n'
done
from=$(git fetch -v origin +refs/heads/main:refs/remotes/on/main 2>&1 | grep 'reading from' || true)
m_on=$(median <<<"$on") m_off=$(median <<<"$off") m_plain=$(median <<<"$plain")
echo "fetch through stargate:: from the replica ($replica), $n rounds, medians:"
echo "  read-your-writes on:  $(fmt "$m_on")   ($from)"
echo "  read-your-writes off: $(fmt "$m_off")"
echo "  plain git fetch from the replica's git:// URL: $(fmt "$m_plain")"
echo "BENCH ryw_fetch_on $((m_on / 1000)).$(printf %03d $((m_on % 1000))) $((m_plain / 1000)).$(printf %03d $((m_plain % 1000))) ms"
echo "BENCH ryw_fetch_off $((m_off / 1000)).$(printf %03d $((m_off % 1000))) $((m_plain / 1000)).$(printf %03d $((m_plain % 1000))) ms"
cd "$work"
"${lab[@]}" down >/dev/null

# The three-level tree.
printf '[stargate "c"]\n\tupstream = b\n[stargate "alert"]\n\twindow = 1m\n' >"$work/extra"
LAB_EXTRA_CONFIG=$work/extra "${lab[@]}" up --nodes 3 --net 127.79.22 >/dev/null
leader=$("${lab[@]}" leader)
if [ "$leader" != a ]; then
  GIT_CONFIG_GLOBAL=$work/lab/a/gitconfig git stargate promote --yes >/dev/null
fi
git clone -q "git://$(cat "$work/lab/a/ip")/kv.git" "$work/client" 2>/dev/null
cd "$work/client"
sleep 12 # c's first sync is a full mirror, from the leader; after it, c mirrors through b
# On a schedule (write i at start + i/RATE s), so that the writes' own time does not slow the rate.
start=$(date +%s%N) end=$(( $(date +%s) + seconds )) i=0
while [ "$(date +%s)" -lt "$end" ]; do
  git kv set "steady/$((i % 500))" "$i"
  i=$((i + 1))
  wait_ns=$(( start + i * 1000000000 / rate - $(date +%s%N) ))
  if [ "$wait_ns" -gt 0 ]; then sleep "$(awk "BEGIN{print $wait_ns/1e9}")"; fi
done
sleep 2
via=$(grep -c 'sync from a via b' "$work/lab/c/agent.log" || true)
direct_syncs=$(grep -c 'sync from a:' "$work/lab/c/agent.log" || true)
echo "$i writes in $seconds s on a; c synced $via times through b, $direct_syncs from a"
for node in b c; do
  out=$(GIT_CONFIG_GLOBAL=$work/lab/$node/gitconfig git stargate lag --json)
  p50=$(python3 -c 'import json,sys; a=json.load(sys.stdin)["aggregate"]; print(a["p50_s"])' <<<"$out")
  p99=$(python3 -c 'import json,sys; a=json.load(sys.stdin)["aggregate"]; print(a["p99_s"])' <<<"$out")
  echo "lag on $node: p50 $p50 s, p99 $p99 s"
  echo "BENCH cascade_lag_${node}_p50_${rate}ps $p50 - s"
  echo "BENCH cascade_lag_${node}_p99_${rate}ps $p99 - s"
done
