#!/usr/bin/env bash
# `git kv set` against a plain `git push` to the same leader over git://, same run: the median
# of N sequential sets from one client (each a commit and one push to refs/for/kv/, applied
# by the leader) against the median of N plain pushes of a new commit; then 8 clients writing
# unique keys into one namespace at once (M each): sets per second, every set's latency
# p50/p99, that none gave up, and that no key was lost or written twice (M x 8 keys and
# commits). Each phase's replication lag p50/p99 is the replica's own (git stargate lag).
# Then the goals (git-kv(1), WRITES): with 8 writers, p99 <= 3 x p50 and <= 1 s, the
# aggregate rate at least one writer's, 0 lost, 0 given up; the run fails if one is missed.
# Usage: contrib/bench/kv.sh [N] [M]   (stargate-hook on PATH; N default 30, M default 10)
set -euo pipefail
n=${1:-30} m=${2:-10}
. "$(dirname "$0")/lib.sh"
printf '[stargate "alert"]\n\twindow = 2s\n[stargate "metrics"]\n\tinterval = 1s\n' >"$work/extra"
lab_up 127.79.5 "$work/extra"
url=git://$(cat "$work/lab/$leader/ip")/kv.git
now_us() { echo $(( $(date +%s%N) / 1000 )); }
pct() { sort -n | awk -v p="$1" '{ v[NR] = $1 } END { i = int((NR * p + 99) / 100); if (i < 1) i = 1; print v[i] }'; }
lag() { # the replica's aggregate lag over the run so far, once its windows are judged
  sleep 5
  GIT_CONFIG_GLOBAL=$work/lab/$replica/gitconfig git stargate lag | grep -i 'aggregate' || true
}
for i in $(seq 0 8); do git clone -q "$url" "$work/c$i" 2>/dev/null; done
git -C "$work/c0" commit -q --allow-empty -m base
git -C "$work/c0" push -q origin HEAD:refs/heads/bench
git -C "$work/c0" kv set warm 0 # the namespace exists; c0's clone is current

plain=() ours=()
for ((i = 1; i <= n; i++)); do
  git -C "$work/c0" commit -q --allow-empty -m "push $i"
  s=$(now_us); git -C "$work/c0" push -q origin HEAD:refs/heads/bench; plain+=($(( $(now_us) - s )))
  s=$(now_us); git -C "$work/c0" kv set "one/$i" "$i"; ours+=($(( $(now_us) - s )))
done
p=$(printf '%s\n' "${plain[@]}" | pct 50) o=$(printf '%s\n' "${ours[@]}" | pct 50)
echo "one client: git kv set $(fmt "$o") vs git push $(fmt "$p") (ratio $(awk "BEGIN{printf \"%.2f\", $o/$p}")); $(awk "BEGIN{printf \"%.1f\", 1000000/$o}") sets/s; medians of $n"
l1=$(lag)
echo "  replica lag so far: $l1"
echo "BENCH kv_set_1 $(awk "BEGIN{printf \"%.3f\", $o/1000}") $(awk "BEGIN{printf \"%.3f\", $p/1000}") ms"
echo "BENCH kv_rate_1 $(awk "BEGIN{printf \"%.1f\", 1000000/$o}") - sets/s"
echo "BENCH kv_lag_p99_1 $(sed -n 's/.*p99 \([0-9.]*\) s.*/\1/p' <<<"$l1") - s"

start=$(now_us)
for w in $(seq 1 8); do
  (
    cd "$work/c$w"
    for ((i = 0; i < m; i++)); do
      s=$(now_us)
      git kv set "many/w$w/k$i" "$w.$i" 2>>"$work/errors" || echo "w$w/k$i" >>"$work/failed"
      echo $(( $(now_us) - s )) >>"$work/lat"
    done
  ) &
done
wait
total=$(( $(now_us) - start ))
touch "$work/failed"; failed=$(wc -l <"$work/failed")
keys=$(git -C "$work/c0" kv list many/ | wc -l)
commits=$(git --git-dir="$work/lab/$leader/repos/kv.git" rev-list --count refs/kv/default)
want_commits=$(( 1 + n + 8 * m ))
echo "8 clients x $m sets: $(awk "BEGIN{printf \"%.1f\", 8*$m*1000000/$total}") sets/s; latency p50 $(fmt "$(pct 50 <"$work/lat")") p99 $(fmt "$(pct 99 <"$work/lat")"); gave up: $failed; keys $keys of $(( 8 * m )); commits $commits of $want_commits"
l8=$(lag)
echo "  replica lag over the run: $l8"
echo "BENCH kv_rate_8 $(awk "BEGIN{printf \"%.1f\", 8*$m*1000000/$total}") - sets/s"
echo "BENCH kv_latency_p50_8 $(awk "BEGIN{printf \"%.3f\", $(pct 50 <"$work/lat")/1000}") - ms"
echo "BENCH kv_latency_p99_8 $(awk "BEGIN{printf \"%.3f\", $(pct 99 <"$work/lat")/1000}") - ms"
echo "BENCH kv_gave_up_8 $failed - sets"
echo "BENCH kv_lag_p99_all $(sed -n 's/.*p99 \([0-9.]*\) s.*/\1/p' <<<"$l8") - s"
p50=$(pct 50 <"$work/lat") p99=$(pct 99 <"$work/lat")
rate1=$(awk "BEGIN{printf \"%.1f\", 1000000/$o}") rate8=$(awk "BEGIN{printf \"%.1f\", 8*$m*1000000/$total}")
lost=$(( 8 * m - keys ))
echo "BENCH kv_lost_8 $lost - keys"
goal() { if eval "$2"; then echo "goal met:    $1"; else echo "goal missed: $1"; missed=1; fi; }
missed=0
goal "p99 $(fmt "$p99") <= 3 x p50 $(fmt "$p50")" "[ $p99 -le $(( 3 * p50 )) ]"
goal "p99 $(fmt "$p99") <= 1 s" "[ $p99 -le 1000000 ]"
goal "8 writers' rate $rate8/s >= one writer's $rate1/s" "awk 'BEGIN{exit !($rate8 >= $rate1)}'"
goal "lost $lost, gave up $failed" "[ $lost -eq 0 ] && [ $failed -eq 0 ]"
[ "$failed" -eq 0 ] && [ "$keys" -eq $(( 8 * m )) ] && [ "$commits" -eq "$want_commits" ] || { echo "bench: lost, duplicated or failed sets" >&2; cat "$work/errors" >&2 || true; exit 1; }
[ "$missed" -eq 0 ] || { echo "bench: a goal was missed" >&2; exit 1; }
