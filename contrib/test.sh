#!/usr/bin/env bash
# Install what the test suite needs (as root, on Debian), then run it whole: the fast tier
# and the tests that need root, which the fast tier (`cargo test`) reports as ignored
# (#[ignore = "needs root: ..."]) and which run here with --run-ignored all; then the demo
# on the release build operators install.
# Usage: contrib/test.sh [nextest filter...]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v git >/dev/null || need+=(git)
command -v systemd-socket-activate >/dev/null || need+=(systemd)
command -v mandoc >/dev/null || need+=(mandoc)
command -v setsid >/dev/null || need+=(util-linux)
[ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null || need+=(openssh-server)
# Monitoring and the servers operators run (tests/it/monitoring.rs, tests/it/servers.rs).
command -v promtool >/dev/null && command -v prometheus >/dev/null || need+=(prometheus)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
[ -x /usr/sbin/nginx ] || need+=(nginx)
[ -x /usr/sbin/fcgiwrap ] || need+=(fcgiwrap)
command -v gitolite >/dev/null || need+=(gitolite3)
# The etcd lease (tests/it/etcd.rs), clocks shifted per process (tests/it/clocks.rs), certificates.
[ -x /usr/bin/etcd ] || need+=(etcd-server)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || need+=(faketime)
command -v openssl >/dev/null || need+=(openssl)
# The --netns lab of the acceptance plans' tests (tests/it/acceptance): namespaces, nft cuts, the floating address.
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v keepalived >/dev/null || need+=(keepalived)
command -v curl >/dev/null || need+=(curl)
# The Debian package's test (tests/it/package.rs): man -w, and the package's dependencies.
command -v man >/dev/null || need+=(man-db)
command -v adduser >/dev/null || need+=(adduser)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${need[*]}"
    apt-get update -qq
    # The tests start their own etcd, nginx and prometheus on their own addresses: the
    # packages' services must not start (and hold ports) on the way in.
    policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
  else
    echo "test.sh: please install: ${need[*]}" >&2
    exit 1
  fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
# The version README's Install names: the package test packages with --no-build --profile dev.
if ! cargo deb --version 2>/dev/null | grep -qx 'cargo-deb 3\.8\.0'; then
  cargo install --locked --version 3.8.0 cargo-deb
fi

cargo build --all-targets
cargo nextest run --no-fail-fast --run-ignored all "$@"
# The suite runs a glibc build: its clock tests shift one process's clock with libfaketime,
# which a static binary does not load. What operators install is the static musl build
# (contrib/build.sh): the whole suite, not a filtered part, ends with the demo on it.
if [ $# -eq 0 ]; then
  contrib/demo.sh
fi
