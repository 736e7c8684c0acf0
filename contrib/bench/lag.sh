#!/usr/bin/env bash
# Replication lag under steady writes: a two-node lab, `git kv set` on the leader at a fixed
# rate for SECONDS (default 300), then the replica's own figures (`git stargate lag`):
# per-minute windows with p50/p99 and the aggregate over the run.
# Usage: contrib/bench/lag.sh [SECONDS] [WRITES_PER_SECOND]   (stargate-hook on PATH)
set -euo pipefail
seconds=${1:-300} rate=${2:-2}
. "$(dirname "$0")/lib.sh"
printf '[stargate "alert"]\n\twindow = 1m\n[stargate "metrics"]\n\tinterval = 1s\n' >"$work/extra"
lab_up 127.79.3 "$work/extra"
git clone -q "git://$(cat "$work/lab/$leader/ip")/kv.git" "$work/client" 2>/dev/null
cd "$work/client"
gap=$(awk "BEGIN{print 1/$rate}")
end=$(( $(date +%s) + seconds )) i=0
while [ "$(date +%s)" -lt "$end" ]; do
  git kv set "steady/$((i % 500))" "$i"
  i=$((i + 1))
  sleep "$gap"
done
sleep 65 # let the last window close and be judged
echo "$i writes in $seconds s on $leader; lag measured on $replica:"
out=$(GIT_CONFIG_GLOBAL=$work/lab/$replica/gitconfig git stargate lag)
echo "$out"
agg=$(grep -i aggregate <<<"$out" || true)
echo "BENCH lag_p50_${rate}ps $(sed -n 's/.*p50 \([0-9.]*\) s.*/\1/p' <<<"$agg") - s"
echo "BENCH lag_p99_${rate}ps $(sed -n 's/.*p99 \([0-9.]*\) s.*/\1/p' <<<"$agg") - s"
