#!/usr/bin/env bash
# Added cost of the Stargate hooks on a push to a small repository: N pushes (default 20) to
# each of four identical repositories on the leader, interleaved, through the same git daemon:
#   plain    no hooks at all (core.hooksPath unset): git's own push
#   floor    every hook git runs is a link to /bin/true: what starting them costs git
#   full     a managed repository's own hooks (git stargate manage: Stargate's four, and
#            links to the repository's own hooks, of which it has none)
#   minimal  Stargate's pre-receive and reference-transaction only (githooks-minimal)
# Prints each median and its difference and ratio against plain.
# Usage: contrib/bench/hook-cost.sh [N]   (stargate-hook on PATH; HOOK_BENCH_URL=file: by path)
#
# With --refs R: N pushes (default 5) of R refs at once (default 500), each moving every ref
# to a new commit, non-atomic and --atomic, by path, with a node's configuration, into:
#   none       a repository, no Stargate anywhere (the bench's own git config)
#   unmanaged  a repository on a node that Stargate does not manage (the node's config)
#   wide       the same with the older machine-wide core.hooksPath naming Stargate's hooks
#   wfloor     the same with a machine-wide directory of /bin/true links, one per hook
#   managed    a managed repository (git stargate manage)
#   floor      a repository whose hooks are /bin/true links for the hooks the managed one
#              starts: as many processes, none of Stargate's work
# and prints the medians with the ratios unmanaged/none and managed/floor of the same run.
# Usage: contrib/bench/hook-cost.sh --refs [R] [N]
#
# With --group: N one-ref pushes (default 15) by path into repositories on the leader of a
# two-node group (agents running, the replica mirroring each write as the leader signals
# it), interleaved: plain (no hooks), floor (the hooks a managed repository starts, as
# /bin/true links) and managed; prints the medians and managed minus floor, and the median
# of each round's managed-minus-floor difference (less moved by the host's drift).
# HOOK_GROUP_REPLICA=stopped stops the replica's agent (SIGSTOP) for the pushes and lets it
# catch up after: what the replica's mirroring, on this machine's cores here and on its
# own machine in production, adds to the leader's pushes.
# Usage: contrib/bench/hook-cost.sh --group [N]
set -euo pipefail
if [ "${1:-}" = --refs ]; then
  refs=${2:-500} n=${3:-5}
  . "$(dirname "$0")/lib.sh"
  . "$(dirname "$0")/hook-bulk.sh"
  exit
fi
if [ "${1:-}" = --group ]; then
  n=${2:-15}
  . "$(dirname "$0")/lib.sh"
  . "$(dirname "$0")/hook-group.sh"
  exit
fi
n=${1:-20}
. "$(dirname "$0")/lib.sh"
kinds="plain floor full minimal"
"${lab[@]}" up --nodes 1 --net 127.79.1 --repos "$kinds" >/dev/null
repos=$work/lab/a/repos
mkdir "$work/hooks-floor" "$work/hooks-minimal"
for h in "$root"/githooks/*; do ln -s /bin/true "$work/hooks-floor/$(basename "$h")"; done
for h in pre-receive reference-transaction; do ln -s "$(command -v stargate-hook)" "$work/hooks-minimal/$h"; done
git --git-dir="$repos/plain.git" config --unset core.hooksPath
git --git-dir="$repos/floor.git" config core.hooksPath "$work/hooks-floor"
git --git-dir="$repos/minimal.git" config core.hooksPath "$work/hooks-minimal"
# full keeps what git stargate manage set (the lab manages every repository it makes).
ip=$(cat "$work/lab/a/ip")
# HOOK_BENCH_URL=file pushes to the repositories by path (no daemon, no TCP).
base="git://$ip"
[ "${HOOK_BENCH_URL:-}" = file ] && base="file://$repos"
clone_pushed "$base" $kinds
declare -A t
for ((i = 1; i <= n; i++)); do
  for r in $kinds; do t[$r]+="$(push_change "$work/$r" "$i") "; done
done
[ "$(git --git-dir="$repos/full.git" rev-list --count refs/stargate/journal)" -gt "$n" ] || { echo "bench: the full hooks did not journal" >&2; exit 1; }
[ "$(git --git-dir="$repos/minimal.git" rev-list --count refs/stargate/journal)" -gt "$n" ] || { echo "bench: the minimal hooks did not journal" >&2; exit 1; }
declare -A m
for r in $kinds; do m[$r]=$(printf '%s\n' ${t[$r]} | median); done
echo "push medians over $n runs ($( [ "${HOOK_BENCH_URL:-}" = file ] && echo "by path" || echo "git://")):"
for r in $kinds; do
  echo "  $r: $(fmt "${m[$r]}")  (+$(fmt $(( m[$r] - m[plain] ))), ratio $(awk "BEGIN{printf \"%.2f\", ${m[$r]}/${m[plain]}}"))"
done
t=$([ "${HOOK_BENCH_URL:-}" = file ] && echo path || echo git)
for r in floor full minimal; do echo "BENCH hooks_${r}_$t $(awk "BEGIN{printf \"%.3f\", ${m[$r]}/1000}") $(awk "BEGIN{printf \"%.3f\", ${m[plain]}/1000}") ms"; done
echo "added cost of the hooks: $(fmt $(( m[full] - m[plain] ))) per push (ratio $(awk "BEGIN{printf \"%.2f\", ${m[full]}/${m[plain]}}")); of which starting six processes: $(fmt $(( m[floor] - m[plain] )))"
