#!/usr/bin/env bash
# Cost of git-remote-stargate: clone, fetch and push of one repository (default 120 MB of
# incompressible data) through stargate::a,b/<repo> against the leader's direct git:// URL,
# N rounds each (default 5), alternating which goes first, in one run on one two-node lab.
# Prints every time, the medians and their ratio, the fixed cost on a small operation
# (ls-remote), and the helper's leader resolution time (as it reports it with -v) over 20 runs.
# TRANSPORT=ssh or https: the lab's nodes serve over that transport (`lab up --transport`),
# and both the direct URL and stargate:: go through it (https pushes as the lab's user).
# Usage: [TRANSPORT=git|ssh|https] contrib/bench/remote.sh [N] [SIZE_MB]   (stargate-hook and git-remote-stargate on PATH)
set -euo pipefail
n=${1:-5}
size=${2:-120}
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v git-remote-stargate >/dev/null || { echo "git-remote-stargate is not on PATH" >&2; exit 1; }
work=$(mktemp -d)
lab=("$root/contrib/lab/lab" --dir "$work/lab")
trap '"${lab[@]}" down >/dev/null 2>&1; rm -rf "$work"' EXIT
export GIT_CONFIG_NOSYSTEM=1 HOME=$work GIT_CONFIG_GLOBAL=$work/.gitconfig LC_ALL=C TZ=UTC
transport=${TRANSPORT:-git}
over=$([ "$transport" = git ] || echo "_$transport") # the BENCH keys' suffix
unset GIT_SSL_CAINFO GIT_SSL_CAPATH GIT_SSL_CERT GIT_SSL_KEY GIT_SSH_COMMAND GIT_SSH
"${lab[@]}" up --nodes 2 --net 127.81.0 --repos "kv bench" --transport "$transport" >/dev/null
leader=$("${lab[@]}" leader)
other=$([ "$leader" = a ] && echo b || echo a)
# The replica's agent would mirror every pushed repository while we time: stop it.
"${lab[@]}" kill "$other" agent KILL
{ "${lab[@]}" client-config "$transport"; printf '[user]\n\tname = bench\n\temail = bench@lab\n'; } >"$GIT_CONFIG_GLOBAL"
ip=$(cat "$work/lab/$leader/ip")
case $transport in
  git) direct="git://$ip" ;;
  ssh)
    direct="ssh://$(id -un)@$ip:$(cat "$work/lab/ssh/port")$work/lab/$leader/repos"
    printf '[core]\n\tsshCommand = %s\n' "$(cat "$work/lab/ssh/command")" >>"$GIT_CONFIG_GLOBAL" ;;
  https)
    direct="https://$ip:$(cat "$work/lab/tls/port")"
    printf 'https://lab:lab@%s:%s\n' "$ip" "$(cat "$work/lab/tls/port")" >"$work/credentials"
    printf '[http]\n\tsslCAInfo = %s\n\tsslCert = %s\n\tsslKey = %s\n[credential]\n\thelper = store --file %s\n' \
      "$work/lab/tls/ca.pem" "$work/lab/tls/$other.pem" "$work/lab/tls/$other.key" "$work/credentials" >>"$GIT_CONFIG_GLOBAL" ;;
esac
via="stargate::a,b"

git init -q -b main "$work/src"
files=20
for ((i = 0; i < files; i++)); do
  head -c $((size * 1024 * 1024 / files)) /dev/urandom >"$work/src/blob$i"
done
git -C "$work/src" add . && git -C "$work/src" commit -q -m "bench data"
git -C "$work/src" repack -adq
git -C "$work/src" push -q "$direct/bench.git" main
# Packed on both ends, as a served repository is: transfers reuse the pack, so the time is
# transport and indexing, not compression, and the helper's share is not hidden.
git --git-dir="$work/lab/$leader/repos/bench.git" repack -adq
pack_mb=$(du -sm "$work/lab/$leader/repos/bench.git/objects" | cut -f1)

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
declare -A times
round() { # kind mode round-number
  local kind=$1 mode=$2 i=$3 base start
  base=$([ "$mode" = direct ] && echo "$direct" || echo "$via")
  case $kind in
    clone)
      start=$(date +%s%N)
      git clone -q --bare "$base/bench.git" "$work/c-$mode-$i"
      times[$kind-$mode]+="$(ms "$start") "
      rm -rf "$work/c-$mode-$i" ;;
    fetch)
      git init -q --bare "$work/f-$mode-$i"
      start=$(date +%s%N)
      git -C "$work/f-$mode-$i" fetch -q "$base/bench.git" '+refs/heads/*:refs/heads/*'
      times[$kind-$mode]+="$(ms "$start") "
      rm -rf "$work/f-$mode-$i" ;;
    push)
      local repo="$work/lab/$leader/repos/p-$mode-$i.git"
      git init -q --bare "$repo"
      GIT_CONFIG_GLOBAL=$work/lab/$leader/gitconfig git stargate manage "$repo" >/dev/null
      start=$(date +%s%N)
      git -C "$work/src" push -q "$base/p-$mode-$i.git" main
      times[$kind-$mode]+="$(ms "$start") "
      # The leader's agent may still be writing its own files into the new repository.
      rm -rf "$repo" 2>/dev/null || { sleep 1; rm -rf "$repo"; } ;;
  esac
}
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "repository: $size MB of random data in $files files, $pack_mb MB of objects on the leader ($leader)"
echo "rounds: $n; direct = $direct/<repo>, stargate = $via/<repo>"
for kind in clone fetch push; do
  for ((i = 1; i <= n; i++)); do
    if ((i % 2)); then round $kind direct $i; round $kind stargate $i; else round $kind stargate $i; round $kind direct $i; fi
  done
  d=$(echo "${times[$kind-direct]}" | median)
  s=$(echo "${times[$kind-stargate]}" | median)
  printf '%-5s direct (ms): %s\n' "$kind" "${times[$kind-direct]}"
  printf '%-5s via    (ms): %s\n' "$kind" "${times[$kind-stargate]}"
  printf '%-5s median direct %s ms, via stargate:: %s ms, ratio %s\n' "$kind" "$d" "$s" \
    "$(awk -v a="$s" -v b="$d" 'BEGIN { printf "%.3f", a / b }')"
  echo "BENCH helper_$kind$over $s $d ms"
done

small_direct="" small_via=""
for ((i = 0; i < 20; i++)); do
  start=$(date +%s%N); git ls-remote "$direct/bench.git" >/dev/null; small_direct+="$(ms "$start") "
  start=$(date +%s%N); git ls-remote "$via/bench.git" >/dev/null; small_via+="$(ms "$start") "
done
echo "ls-remote median direct $(echo "$small_direct" | median) ms, via stargate:: $(echo "$small_via" | median) ms (20 runs each)"
echo "BENCH helper_ls_remote$over $(echo "$small_via" | median) $(echo "$small_direct" | median) ms"

res=()
for ((i = 0; i < 20; i++)); do
  line=$(git -C "$work/src" fetch -v "$via/bench.git" main 2>&1 | grep 'stargate: reading from' || true)
  res+=("$(sed -n 's/.*resolved in \([0-9.]*\) ms.*/\1/p' <<<"$line")")
done
sorted=$(printf '%s\n' "${res[@]}" | sort -n)
echo "leader resolution (ms, as the helper reports it): ${res[*]}"
echo "leader resolution median: $(echo "$sorted" | sed -n 10p) ms, worst: $(echo "$sorted" | tail -1) ms"
