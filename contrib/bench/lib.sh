# shellcheck shell=bash
# Sourced by the benchmarks: `root`, a work directory with a lab in it (`lab` runs
# contrib/lab/lab there) that go away on exit unless KEEP is set, and git kept from the
# machine's own configuration.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
lab=("$root/contrib/lab/lab" --dir "$work/lab")
if [ -n "${KEEP:-}" ]; then echo "work: $work"; else trap '"${lab[@]}" down >/dev/null 2>&1; trap_transport; rm -rf "$work"' EXIT; fi
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=$work/gitconfig HOME=$work LC_ALL=C
# The transport settings are the run's own (TRANSPORT below), not the environment's.
unset GIT_SSL_CAINFO GIT_SSL_CAPATH GIT_SSL_CERT GIT_SSL_KEY GIT_SSH_COMMAND GIT_SSH
printf '[user]\n\tname = Bench\n\temail = bench@example.com\n' >"$GIT_CONFIG_GLOBAL"

# TRANSPORT: how the nodes reach each other, and the URL (`url`) plain git is measured
# against in the same run. `git` (the default): git daemon. `ssh`: an sshd of the benchmark's
# own on each node's address, port 2222, as contrib/ssh sets it up (a dedicated key, strict
# host keys; no encryption is skipped). `https`: nginx and fcgiwrap with
# contrib/nginx/stargate-git-mtls.conf on each node's address, port 8443, client
# certificates asked for, from a CA made for the run. Every git the benchmark runs (the
# nodes' and plain git) uses the same settings.
transport=${TRANSPORT:-git}
# The suffix of a BENCH key measured over TRANSPORT (none for git://).
over=$([ "$transport" = git ] || echo "_$transport")
case $transport in git | ssh | https) ;; *) echo "bench: TRANSPORT is git, ssh or https, not '$transport'" >&2; exit 2 ;; esac
transport_pids=()
# Each server in its own process group (setsid), stopped whole: fcgiwrap's children too.
trap_transport() { local p; for p in "${transport_pids[@]}"; do kill -- "-$p" 2>/dev/null || true; done; }

# transport_config NET: the git config every node and plain git use for TRANSPORT.
transport_config() {
  local net=$1 n i
  case $transport in
    ssh)
      for i in 1 2; do
        n=$([ $i = 1 ] && echo a || echo b)
        printf '[stargate "%s"]\n\turl = ssh://%s@%s.%s:2222%s/lab/%s/repos/\n' "$n" "$(id -un)" "$net" "$i" "$work" "$n"
      done
      printf '[core]\n\tsshCommand = ssh -i %s/ssh/client_key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=%s/ssh/known_hosts -o LogLevel=ERROR\n' "$work" "$work" ;;
    https)
      for i in 1 2; do
        n=$([ $i = 1 ] && echo a || echo b)
        printf '[stargate "%s"]\n\turl = https://%s.%s:8443/\n' "$n" "$net" "$i"
      done
      printf '[http]\n\tsslCAInfo = %s/tls/ca.pem\n\tsslCert = %s/tls/client.pem\n\tsslKey = %s/tls/client.key\n' "$work" "$work" "$work" ;;
  esac
}

# transport_start NET: the servers TRANSPORT needs, one per node address (the lab's nodes).
transport_start() {
  local net=$1 i n ip
  case $transport in
    ssh)
      mkdir -p "$work/ssh" /run/sshd
      ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/host_key"
      ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/client_key"
      cp "$work/ssh/client_key.pub" "$work/ssh/authorized_keys"
      : >"$work/ssh/known_hosts"
      {
        printf 'Port 2222\nHostKey %s/ssh/host_key\nAuthorizedKeysFile %s/ssh/authorized_keys\n' "$work" "$work"
        printf 'StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n'
        printf 'PermitRootLogin prohibit-password\nAcceptEnv GIT_PROTOCOL\nPidFile none\nLogLevel ERROR\nMaxStartups 100\n'
        # A home of its own: commands over ssh start without the login's shell startup files
        # (a dedicated git user's, not whatever the benchmark's user has there).
        printf 'SetEnv HOME=%s/ssh\n' "$work"
        for i in 1 2; do printf 'ListenAddress %s.%s:2222\n' "$net" "$i"; done
      } >"$work/ssh/sshd_config"
      setsid /usr/sbin/sshd -D -e -f "$work/ssh/sshd_config" </dev/null >/dev/null 2>"$work/ssh/sshd.log" &
      transport_pids+=($!)
      for i in 1 2; do
        printf '[%s.%s]:2222 %s\n' "$net" "$i" "$(cat "$work/ssh/host_key.pub")" >>"$work/ssh/known_hosts"
        wait_port "$net.$i" 2222
      done ;;
    https)
      mkdir -p "$work/tls" "$work/nginx"
      (
        cd "$work/tls"
        ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
        printf 'subjectAltName = IP:%s.1,IP:%s.2\nextendedKeyUsage = serverAuth\n' "$net" "$net" >server.cnf
        printf 'extendedKeyUsage = clientAuth\n' >client.cnf
        openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
        for n in server client; do
          openssl req "${ec[@]}" -keyout $n.key -out $n.csr -subj /CN=$n 2>/dev/null
          openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 2 -extfile $n.cnf 2>/dev/null
        done
      )
      local d=$work/nginx site
      site=$(sed -n '/^map/,$p' "$root/contrib/nginx/stargate-git-mtls.conf")
      {
        echo "$site" | sed -n '/^map/,/^}/p'
        for i in 1 2; do
          n=$([ $i = 1 ] && echo a || echo b)
          echo "$site" | sed -n '/^server/,$p' | sed -e "s|listen 443 ssl;|listen $net.$i:8443 ssl;|" \
            -e "s|/etc/nginx/stargate/|$work/tls/|g" -e "s|/run/fcgiwrap.socket|$d/fcgiwrap.socket|" \
            -e "s|/srv/git;|$work/lab/$n/repos;|" -e "s|/etc/nginx/git.htpasswd|$d/htpasswd|"
        done
      } >"$d/site.conf"
      printf 'daemon off;\nuser root;\nworker_processes 2;\npid %s/nginx.pid;\nerror_log %s/error.log;\nevents { worker_connections 256; }\nhttp {\n  access_log off;\n  client_body_temp_path %s/body;\n  fastcgi_temp_path %s/fastcgi;\n  proxy_temp_path %s/proxy;\n  uwsgi_temp_path %s/uwsgi;\n  scgi_temp_path %s/scgi;\n  include %s/site.conf;\n}\n' "$d" "$d" "$d" "$d" "$d" "$d" "$d" "$d" >"$d/nginx.conf"
      echo 'bench:{PLAIN}secret' >"$d/htpasswd" # pushes ask for a user (the site's realm)
      setsid /usr/sbin/fcgiwrap -s "unix:$d/fcgiwrap.socket" -c 8 </dev/null >/dev/null 2>"$d/fcgiwrap.log" &
      transport_pids+=($!)
      setsid /usr/sbin/nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" </dev/null >/dev/null 2>"$d/nginx.out" &
      transport_pids+=($!)
      for i in 1 2; do wait_port "$net.$i" 8443; done ;;
  esac
}

# wait_port IP PORT: until something listens there (10 s at most).
wait_port() {
  local t
  for ((t = 0; t < 100; t++)); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench: nothing listens on $1:$2" >&2
  exit 1
}

# lab_up NET [EXTRA_CONFIG_FILE]: two nodes on NET (such as 127.79.9) reaching each other over
# TRANSPORT; sets `leader` and `replica`.
lab_up() {
  { [ -z "${2:-}" ] || cat "$2"; transport_config "$1"; } >"$work/lab-extra"
  transport_config "$1" >>"$GIT_CONFIG_GLOBAL"
  LAB_EXTRA_CONFIG=$work/lab-extra "${lab[@]}" up --nodes 2 --net "$1" >/dev/null
  transport_start "$1"
  leader=$("${lab[@]}" leader)
  replica=$([ "$leader" = a ] && echo b || echo a)
}

# Only the benchmark syncs: the replica's agent stops (its sync token stays valid). Sets `L`
# and `R` (the leader's and the replica's kv.git) and `url` (the leader's URL over TRANSPORT).
replica_agent_off() {
  "${lab[@]}" kill "$replica" agent TERM
  sleep 1
  L=$work/lab/$leader/repos/kv.git R=$work/lab/$replica/repos/kv.git
  local ip; ip=$(cat "$work/lab/$leader/ip")
  case $transport in
    git) url=git://$ip/kv.git ;;
    ssh) url=ssh://$(id -un)@$ip:2222$L ;;
    https) url=https://bench:secret@$ip:8443/kv.git ;;
  esac
}

# A command as the replica's node runs it (its git config).
as_replica() { GIT_CONFIG_GLOBAL=$work/lab/$replica/gitconfig "$@"; }

# median: the median of the numbers on stdin, one per line (empty lines skipped), of `n` rounds.
median() { grep . | sort -n | sed -n "$(( (n + 1) / 2 ))p"; }

# fmt US: microseconds as milliseconds with three decimals (negative too).
fmt() { local v=$1 s=""; [ "$v" -lt 0 ] && { s=-; v=$(( -v )); }; printf '%s%d.%03d ms' "$s" $(( v / 1000 )) $(( v % 1000 )); }

# floor_of_managed REPO: REPO's hooks made git's floor for a managed repository: the hooks a
# managed repository has (proc-receive runs only for refs/for/kv/) as /bin/true links, in
# $work/hooks-floor.
floor_of_managed() {
  mkdir -p "$work/hooks-floor"
  for h in pre-receive reference-transaction post-receive proc-receive; do ln -sf /bin/true "$work/hooks-floor/$h"; done
  git --git-dir="$1" config core.hooksPath "$work/hooks-floor"
}

# clone_pushed BASE KIND...: each repository BASE/KIND.git cloned into $work/KIND, with a
# first commit pushed to its main.
clone_pushed() {
  local base=$1 r
  shift
  for r in "$@"; do
    git clone -q "$base/$r.git" "$work/$r" 2>/dev/null
    git -C "$work/$r" commit -q --allow-empty -m init
    git -C "$work/$r" push -q origin HEAD:refs/heads/main
  done
}

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
