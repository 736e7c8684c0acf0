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

# median: the median of the numbers on stdin, one per line (empty lines skipped), of `n` rounds.
median() { grep . | sort -n | sed -n "$(( (n + 1) / 2 ))p"; }

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

# journal_seq REPO: the sequence number of the journal's tip in the repository REPO.
journal_seq() { git -C "$1" log -1 --format=%s refs/stargate/journal | awk '{print $3}'; }

# fill_journal REPO N: N entries put behind the journal's tip of REPO, as the hooks write
# them (one update each, of main to itself), through git fast-import; the journal ref moves
# with the hooks out of the way. Sets `first`, the sequence number of the first of them.
fill_journal() {
  local repo=$1 n=$2 tip head msg depth epoch node new
  tip=$(git -C "$repo" rev-parse refs/stargate/journal)
  head=$(git -C "$repo" rev-parse refs/heads/main)
  msg=$(git -C "$repo" log -1 --format=%B "$tip")
  first=$(($(journal_seq "$repo") + 1))
  depth=$(echo "$msg" | awk '$1 == "depth" {print $2}')
  epoch=$(echo "$msg" | awk '$1 == "epoch" {print $2}')
  node=$(echo "$msg" | awk '$1 == "node" {print $2}')
  awk -v n="$n" -v first="$first" -v depth="$depth" -v epoch="$epoch" -v node="$node" \
    -v head="$head" -v tip="$tip" -v now="$(date +%s)" 'BEGIN {
    for (i = 0; i < n; i++) {
      seq = first + i
      m = sprintf("stargate journal %d\n\nepoch %d\nnode %s\ntime %d000\ndepth %d\n%d %s %s refs/heads/main\n", seq, epoch, node, now, depth + 1 + i, seq, head, head)
      printf "commit refs/stargate/bench\nmark :%d\ncommitter stargate <stargate@%s> %d +0000\ndata %d\n%s", i + 1, node, now, length(m), m
      if (i == 0) printf "from %s\n", tip; else printf "from :%d\n", i
      printf "deleteall\n\n"
    }
  }' | git -C "$repo" fast-import --quiet
  new=$(git -C "$repo" rev-parse refs/stargate/bench)
  git -C "$repo" -c core.hooksPath=/dev/null update-ref refs/stargate/journal "$new" "$tip"
  git -C "$repo" -c core.hooksPath=/dev/null update-ref -d refs/stargate/bench
}
