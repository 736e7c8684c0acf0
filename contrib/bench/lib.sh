# shellcheck shell=bash
# Sourced by the benchmarks: `root`, a work directory with a lab in it (`lab` runs
# contrib/lab/lab there) that go away on exit unless KEEP is set, and git kept from the
# machine's own configuration.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
lab=("$root/contrib/lab/lab" --dir "$work/lab")
if [ -n "${KEEP:-}" ]; then echo "work: $work"; else trap '"${lab[@]}" down >/dev/null 2>&1; rm -rf "$work"' EXIT; fi
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=$work/gitconfig HOME=$work LC_ALL=C
printf '[user]\n\tname = Bench\n\temail = bench@example.com\n' >"$GIT_CONFIG_GLOBAL"

# lab_up NET [EXTRA_CONFIG_FILE]: two nodes on NET (such as 127.79.9); sets `leader` and `replica`.
lab_up() {
  LAB_EXTRA_CONFIG=${2:-} "${lab[@]}" up --nodes 2 --net "$1" >/dev/null
  leader=$("${lab[@]}" leader)
  replica=$([ "$leader" = a ] && echo b || echo a)
}

# Only the benchmark syncs: the replica's agent stops (its sync token stays valid). Sets `L`
# and `R` (the leader's and the replica's kv.git) and `url` (the leader's git:// URL).
replica_agent_off() {
  "${lab[@]}" kill "$replica" agent TERM
  sleep 1
  L=$work/lab/$leader/repos/kv.git R=$work/lab/$replica/repos/kv.git
  url=git://$(cat "$work/lab/$leader/ip")/kv.git
}

# A command as the replica's node runs it (its git config).
as_replica() { GIT_CONFIG_GLOBAL=$work/lab/$replica/gitconfig "$@"; }

# median: the median of the numbers on stdin, one per line, of `n` rounds.
median() { sort -n | sed -n "$(( (n + 1) / 2 ))p"; }

# fmt US: microseconds as milliseconds with three decimals (negative too).
fmt() { local v=$1 s=""; [ "$v" -lt 0 ] && { s=-; v=$(( -v )); }; printf '%s%d.%03d ms' "$s" $(( v / 1000 )) $(( v % 1000 )); }

# push_change DIR I: commit change I in the clone DIR and push it to its origin's main;
# prints how long the push took, in microseconds.
push_change() {
  local start
  echo "$2" >"$1/file"
  git -C "$1" add file
  git -C "$1" commit -q -m "change $2"
  start=$(date +%s%N)
  git -C "$1" push -q origin HEAD:refs/heads/main
  echo $(( ($(date +%s%N) - start) / 1000 ))
}
