#!/usr/bin/env bash
# Added cost of the Stargate hooks on a push to a small repository: N pushes (default 20) to
# each of four identical repositories on the leader, interleaved, through the same git daemon:
#   plain    no hooks at all (core.hooksPath unset): git's own push
#   floor    every hook git runs is a link to /bin/true: what starting them costs git
#   full     Stargate's hooks, one link per hook git knows (contrib/install.sh's githooks)
#   minimal  Stargate's pre-receive and reference-transaction only (githooks-minimal)
# Prints each median and its difference and ratio against plain.
# Usage: contrib/bench/hook-cost.sh [N]   (stargate-hook on PATH; HOOK_BENCH_URL=file: by path)
set -euo pipefail
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
ip=$(cat "$work/lab/a/ip")
# HOOK_BENCH_URL=file pushes to the repositories by path (no daemon, no TCP).
base="git://$ip"
[ "${HOOK_BENCH_URL:-}" = file ] && base="file://$repos"
for r in $kinds; do
  git clone -q "$base/$r.git" "$work/$r" 2>/dev/null
  git -C "$work/$r" commit -q --allow-empty -m init
  git -C "$work/$r" push -q origin HEAD:refs/heads/main
done
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
