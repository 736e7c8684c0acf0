#!/usr/bin/env bash
# The Stargate demo: a two-node cluster on loopback, replicating over ssh as production does
# (docs/RUNBOOK.md, Setup; contrib/ssh): each node's sshd on its own address and port 2222 with
# the demo's own host key, the agents fetching with a key that may only fetch, strict host
# keys. Writes on the leader, replicated to the passive with measured lag, the replica's key
# refused a push, a push to the passive refused (exit 9), the leader's agent killed, the other
# node leading with every earlier write, and a new write accepted there.
# Builds first; leaves nothing running (the system's own sshd is neither used nor touched).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "demo: installing openssh-server (its service is not started: the demo runs its own sshd)"
    policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
    [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
  else
    echo "demo: please install openssh-server (the nodes replicate over ssh)" >&2
    exit 1
  fi
fi

echo "demo: building Stargate (release build; a few minutes the first time on two cores)"
if [ -t 2 ]; then bindir=$(contrib/build.sh); else bindir=$(contrib/build.sh --quiet); fi
prefix=$root/target/stargate
contrib/install.sh --prefix "$prefix" --bindir "$bindir" >/dev/null
export PATH=$prefix/bin:$PATH GIT_CONFIG_NOSYSTEM=1 LC_ALL=C TZ=UTC

work=$(mktemp -d)
lab=("$root/contrib/lab/lab" --dir "$work/lab")
cleanup() { "${lab[@]}" down 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export GIT_CONFIG_GLOBAL=$work/client.gitconfig HOME=$work
printf '[user]\n\tname = Demo\n\temail = demo@example.com\n' >"$GIT_CONFIG_GLOBAL"

refused() { # key value: a write that must be refused as not leader (exit 9)
  local rc=0
  git kv set "$1" "$2" || rc=$?
  echo "git kv exit code: $rc (9 = not leader)"
  [ "$rc" = 9 ] || { echo "demo: expected exit 9" >&2; exit 1; }
}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ms() { date +%s%3N; }

step "two nodes on loopback (a: 127.77.0.1, b: 127.77.0.2), one shared lease, replicating over ssh"
"${lab[@]}" up --nodes 2 --net 127.77.0 --transport ssh
leader=$("${lab[@]}" leader)
passive=$([ "$leader" = a ] && echo b || echo a)
ip() { cat "$work/lab/$1/ip"; }
echo "leader: $leader, passive: $passive"
node_git() { GIT_CONFIG_GLOBAL=$work/lab/$1/gitconfig HOME=$work/lab/$1 git "${@:2}"; }
echo "$passive mirrors $leader from: $(node_git "$passive" config "stargate.$leader.url")"
echo "with: $(node_git "$passive" config core.sshCommand)"
git clone -q "git://$(ip "$leader")/kv.git" "$work/to-$leader" 2>/dev/null
git clone -q "git://$(ip "$passive")/kv.git" "$work/to-$passive" 2>/dev/null

step "git kv set on the leader ($leader)"
cd "$work/to-$leader"
for i in 1 2 3; do git kv set "demo/key$i" "value $i"; done
git kv list
echo "demo/key2 = $(git kv get demo/key2)"

step "replication: the passive ($passive) mirrors each write, lag measured per update"
status() { exec 3<>"/dev/tcp/$(ip "$1")/8080"; printf 'GET /status HTTP/1.0\r\n\r\n' >&3; cat <&3; exec 3<&-; }
for _ in $(seq 100); do
  seq=$(status "$passive" | sed -n 's/.*"journal_seq": *\([0-9]*\).*/\1/p' | head -1)
  [ "${seq:-0}" -ge 3 ] && break
  sleep 0.05
done
echo "journal position on $passive: ${seq:-none} (3 writes)"
[ "${seq:-0}" -ge 3 ] || { echo "demo: $passive did not replicate the writes" >&2; exit 1; }
status "$passive" | grep -E '^  "lag_(seconds|operations)"'
GIT_CONFIG_GLOBAL=$work/lab/$passive/gitconfig git stargate lag | tail -3

step "the replicas' key may only fetch: a push with it is refused by the leader's sshd"
replica_ssh=$(node_git "$passive" config core.sshCommand)
stolen=$(git -C "$work/to-$leader" commit-tree -m stolen "$(git -C "$work/to-$leader" hash-object -w -t tree /dev/null)")
rc=0
GIT_SSH_COMMAND=$replica_ssh git -C "$work/to-$leader" push -q "$(node_git "$passive" config "stargate.$leader.url")kv.git" \
  "$stolen:refs/heads/stolen" 2>"$work/stolen.err" || rc=$?
grep "stargate-replica-shell: refused" "$work/stolen.err" || cat "$work/stolen.err"
[ "$rc" != 0 ] && grep -q "stargate-replica-shell: refused" "$work/stolen.err" || { echo "demo: the replica key pushed" >&2; exit 1; }

step "a write sent to the passive ($passive) is refused"
cd "$work/to-$passive"
refused demo/refused "sent to $passive"

step "kill -9 the leader's agent; the passive takes the lease"
epoch=$(sed -n 's/.*"epoch":\([0-9]*\).*/\1/p' "$work/lab/shared/stargate.lock.leader")
start=$(ms)
"${lab[@]}" kill "$leader" agent KILL
until [ "$("${lab[@]}" leader 2>/dev/null || true)" = "$passive" ]; do
  [ $(( $(ms) - start )) -lt 10000 ] || { echo "demo: no failover within 10 s" >&2; exit 1; }
  sleep 0.02
done
took=$(( $(ms) - start ))
new_epoch=$(sed -n 's/.*"epoch":\([0-9]*\).*/\1/p' "$work/lab/shared/stargate.lock.leader")
echo "$passive leads at epoch $new_epoch (was $epoch) after $took ms"

step "the same write, sent to the new leader ($passive), is accepted; earlier writes survived"
git kv set demo/refused "sent to $passive"
git kv list
echo "demo/refused = $(git kv get demo/refused)"
[ "$(git kv get demo/key2)" = "value 2" ] || { echo "demo: a replicated write was lost" >&2; exit 1; }

step "the old leader ($leader) now refuses"
cd "$work/to-$leader"
refused demo/stale "sent to $leader"

step "audit log"
cat "$work/lab/shared/stargate.lock.audit"
echo
echo "demo: ok (failover took $took ms)"
