#!/usr/bin/env bash
# Initial mirror at many refs: a replica whose copy is empty runs `git stargate sync` against
# `git clone --mirror` of the same leader repository, same run. N rounds (default 5), each
# from an empty repository, medians; the replica's copy is checked against the leader's.
# TRANSPORT=ssh or https: the nodes and plain git over that transport (lib.sh).
# Usage: [TRANSPORT=git|ssh|https] contrib/bench/mirror.sh [REFS] [N]   (stargate-hook on PATH; REFS default 100000)
# REF_FORMAT=reftable: the leader's copy, the replica's and the plain mirror in reftable.
set -euo pipefail
refs=${1:-100000} n=${2:-5}
. "$(dirname "$0")/lib.sh"
lab_up 127.79.4
replica_agent_off

# The leader: 100 commits, REFS branches over them, packed, and a journal.
git clone -q "$url" "$work/client" 2>/dev/null
for i in $(seq 1 100); do git -C "$work/client" commit -q --allow-empty -m "c$i"; done
git -C "$work/client" push -q origin HEAD:refs/heads/main
git -C "$work/client" rev-list HEAD >"$work/commits"
awk -v n="$refs" 'BEGIN { print "# pack-refs with: peeled fully-peeled sorted" } { c[NR] = $1 } END { for (i = 0; i < n; i++) printf "%s refs/heads/b%07d\n", c[i % NR + 1], i }' "$work/commits" >"$L/packed-refs"
git -C "$L" pack-refs --all
fmt_opt=()
if [ "${REF_FORMAT:-files}" = reftable ]; then
  git -C "$L" -c core.hooksPath=/dev/null refs migrate --ref-format=reftable
  fmt_opt=(--ref-format=reftable)
fi
git -C "$work/client" commit -q --allow-empty -m last
git -C "$work/client" push -q origin HEAD:refs/heads/main

ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000 )); }
empty_replica() {
  rm -rf "$R"
  git -c core.hooksPath=/dev/null init -q --bare "${fmt_opt[@]}" "$R"
  as_replica git stargate manage "$R" >/dev/null
}
plain() { rm -rf "$work/plain.git"; git clone -q --mirror "${fmt_opt[@]}" "$url" "$work/plain.git"; }
ours() { as_replica git -c stargate.sync.timeout=10m stargate sync kv.git; }
declare -A t
for ((i = 1; i <= n; i++)); do
  t[plain]+="$(ms plain) "
  empty_replica
  t[ours]+="$(ms ours) "
  [ -z "${TRACE:-}" ] || { empty_replica; STARGATE_LOG=debug ours 2>&1 | ts -s "%.s" | tail -20; }
done
want=$(git -C "$L" for-each-ref --format='%(objectname) %(refname)' | grep -v ' refs/stargate/local/' | md5sum)
have=$(git -C "$R" for-each-ref --format='%(objectname) %(refname)' | grep -v ' refs/stargate/local/' | md5sum)
[ "$want" = "$have" ] || { echo "bench: the replica's refs differ from the leader's" >&2; exit 1; }
git -C "$R" fsck --connectivity-only --no-dangling 2>/dev/null || { echo "bench: the replica's copy is not connected" >&2; exit 1; }
declare -A m
for k in plain ours; do m[$k]=$(printf '%s\n' ${t[$k]} | median); done
echo "initial mirror at $refs refs (${REF_FORMAT:-files}): git stargate sync $(fmt "${m[ours]}")  vs  git clone --mirror $(fmt "${m[plain]}")  (ratio $(awk "BEGIN{printf \"%.3f\", ${m[ours]}/${m[plain]}}"))"
echo "medians of $n rounds over $transport; target: ratio <= 1.0"
echo "BENCH mirror_${refs}$([ "${REF_FORMAT:-files}" = reftable ] && echo _reftable)$over $(awk "BEGIN{printf \"%.3f\", ${m[ours]}/1000}") $(awk "BEGIN{printf \"%.3f\", ${m[plain]}/1000}") ms"
