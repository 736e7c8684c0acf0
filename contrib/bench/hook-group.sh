# shellcheck shell=bash
# Sourced by hook-cost.sh --group: a one-ref push by path into a managed repository on the
# leader of a two-node group (both agents running, the replica listening for the leader's
# signal and mirroring each write as it comes), against git's floor for the same hooks
# (see hook-cost.sh's header).
kinds="plain floor managed"
"${lab[@]}" up --nodes 2 --net 127.79.3 --repos "$kinds" >/dev/null
leader=$("${lab[@]}" leader)
replica=$([ "$leader" = a ] && echo b || echo a)
repos=$work/lab/$leader/repos
# floor: a managed repository's hooks as /bin/true links; plain: none.
floor_of_managed "$repos/floor.git"
git --git-dir="$repos/plain.git" config --unset core.hooksPath
clone_pushed "file://$repos" $kinds
declare -A t
replica_stopped=${HOOK_GROUP_REPLICA:-}
[ -z "$replica_stopped" ] || [ "$replica_stopped" = stopped ] || { echo "bench: HOOK_GROUP_REPLICA is 'stopped' or unset" >&2; exit 2; }
[ -z "$replica_stopped" ] || "${lab[@]}" kill "$replica" agent STOP
for ((i = 1; i <= n; i++)); do
  # Each kind first in turn; a pause lets the replica finish mirroring the last write.
  set -- $kinds
  order=$(echo $kinds $kinds | cut -d' ' -f$(( (i - 1) % $# + 1 ))-$(( (i - 1) % $# + $# )))
  for r in $order; do
    sleep 0.2
    t[$r]+="$(push_change "$work/$r" "$i") "
  done
done
[ -z "$replica_stopped" ] || "${lab[@]}" kill "$replica" agent CONT
# The managed pushes were journaled, and the replica mirrored them (as they came, or once
# let go on).
want=$(git --git-dir="$repos/managed.git" rev-parse refs/heads/main)
for _ in $(seq 100); do
  [ "$(git --git-dir="$work/lab/$replica/repos/managed.git" rev-parse refs/heads/main 2>/dev/null)" = "$want" ] && break
  sleep 0.1
done
[ "$(git --git-dir="$work/lab/$replica/repos/managed.git" rev-parse refs/heads/main)" = "$want" ] || { echo "bench: the replica did not mirror the managed repository" >&2; exit 1; }
[ "$(git --git-dir="$repos/managed.git" rev-list --count refs/stargate/journal)" -gt "$n" ] || { echo "bench: the managed repository was not journaled" >&2; exit 1; }
declare -A m
for r in $kinds; do m[$r]=$(printf '%s\n' ${t[$r]} | median); done
echo "one-ref push by path on the leader of a two-node group${replica_stopped:+ (the agent of the replica stopped)}, medians over $n runs:"
for r in $kinds; do echo "  $r: $(fmt "${m[$r]}")"; done
echo "  Stargate's share above the floor of the same hooks: $(fmt $(( m[managed] - m[floor] ))) (the hooks' own start: $(fmt $(( m[floor] - m[plain] ))))"
# The same share round by round (each round pushes every kind, one after another): the
# median of managed minus floor within a round, which the host's drift over a run moves less.
read -ra fl <<<"${t[floor]}"
read -ra mg <<<"${t[managed]}"
paired=$(for ((i = 0; i < n; i++)); do echo $(( mg[i] - fl[i] )); done | median)
echo "  the same, the median of each round's difference: $(fmt "$paired")"
echo "BENCH hooks_group_managed${replica_stopped:+_replica_stopped} $(awk "BEGIN{printf \"%.3f\", ${m[managed]}/1000}") $(awk "BEGIN{printf \"%.3f\", ${m[floor]}/1000}") ms"
