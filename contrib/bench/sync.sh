#!/usr/bin/env bash
# Sync cost at many refs: `git stargate sync` (journal-driven) against plain
# `git fetch --prune '+refs/*:refs/*'` on an identical copy of the replica, same leader, same
# run. Idle (nothing changed) and one changed ref, N rounds each (default 15), medians.
# TRANSPORT=ssh or https: the nodes and plain git over that transport (lib.sh).
# Usage: [TRANSPORT=git|ssh|https] contrib/bench/sync.sh [REFS] [N]   (stargate-hook on PATH; REFS default 100000)
set -euo pipefail
refs=${1:-100000} n=${2:-15}
. "$(dirname "$0")/lib.sh"
lab_up 127.79.2
replica_agent_off

# The leader: one commit, REFS branches packed, then a pushed change so a journal exists.
git clone -q "$url" "$work/client" 2>/dev/null
git -C "$work/client" commit -q --allow-empty -m base
git -C "$work/client" push -q origin HEAD:refs/heads/main
base=$(git -C "$work/client" rev-parse HEAD)
# Sorted by name already (zero-padded); pack-refs then folds in the loose refs.
awk -v oid="$base" -v n="$refs" 'BEGIN { print "# pack-refs with: peeled fully-peeled sorted"; for (i = 0; i < n; i++) printf "%s refs/heads/b%07d\n", oid, i }' >"$L/packed-refs"
git -C "$L" pack-refs --all
change() { git -C "$work/client" commit -q --allow-empty -m "change $1"; git -C "$work/client" push -q origin HEAD:refs/heads/main; }
change 0
# The replica mirrors it once (full), and a plain copy of it (no hooks) is made for git fetch.
# The REFS branches were written behind the journal's back (straight into packed-refs), so
# the replica forgets the journal position its agent may have mirrored: that forces the full
# mirror a new replica would do.
git -C "$R" -c core.hooksPath=/dev/null update-ref -d refs/stargate/journal 2>/dev/null || true
as_replica git -c stargate.sync.timeout=10m stargate sync kv.git >/dev/null # first mirror: git writes REFS loose refs
git -C "$R" -c core.hooksPath=/dev/null pack-refs --all # storage only; see sync.rs
cp -a "$R" "$work/plain.git"
git -C "$work/plain.git" config --unset core.hooksPath
have=$(git -C "$R" for-each-ref | wc -l)
echo "refs: $have on the replica"
[ "$have" -gt "$refs" ] || { echo "bench: the replica did not mirror the $refs refs" >&2; exit 1; }

ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000 )); }
plain_fetch() { git -C "$work/plain.git" fetch -q --prune --no-tags "$url" '+refs/*:refs/*'; }
ours() { as_replica git stargate sync kv.git; }
declare -A t
for ((i = 1; i <= n; i++)); do
  t[plain_idle]+="$(ms plain_fetch) "
  t[ours_idle]+="$(ms ours) "
  change "$i"
  t[plain_one]+="$(ms plain_fetch) "
  t[ours_one]+="$(ms ours) "
done
[ "$(git -C "$R" rev-parse refs/heads/main)" = "$(git -C "$L" rev-parse refs/heads/main)" ] || { echo "bench: replica did not converge" >&2; exit 1; }
declare -A m
for k in plain_idle ours_idle plain_one ours_one; do m[$k]=$(printf '%s\n' ${t[$k]} | median); done
echo "idle:       git stargate sync $(fmt "${m[ours_idle]}")  vs  git fetch --prune $(fmt "${m[plain_idle]}")  (ratio $(awk "BEGIN{printf \"%.3f\", ${m[ours_idle]}/${m[plain_idle]}}"))"
echo "one change: git stargate sync $(fmt "${m[ours_one]}")  vs  git fetch --prune $(fmt "${m[plain_one]}")  (ratio $(awk "BEGIN{printf \"%.3f\", ${m[ours_one]}/${m[plain_one]}}"))"
echo "medians of $n rounds at $refs refs over $transport; targets: idle <= 20 ms, one change <= 100 ms"
echo "BENCH sync_idle_$refs$over $(awk "BEGIN{printf \"%.3f\", ${m[ours_idle]}/1000}") $(awk "BEGIN{printf \"%.3f\", ${m[plain_idle]}/1000}") ms"
echo "BENCH sync_one_$refs$over $(awk "BEGIN{printf \"%.3f\", ${m[ours_one]}/1000}") $(awk "BEGIN{printf \"%.3f\", ${m[plain_one]}/1000}") ms"
