#!/usr/bin/env bash
# The release build operators install: static binaries against musl (Rust's
# x86_64-unknown-linux-musl target; docs/ARCHITECTURE.md, Performance, says why), into
# target/x86_64-unknown-linux-musl/release. As root on Debian it installs what that needs
# first (musl-tools, for the C that ureq's TLS compiles; the Rust target through rustup).
# Where that cannot be had it builds against glibc into target/release instead, and says so:
# the same program, whose hooks start about 0.4 ms slower each. Prints the directory the
# binaries are in on standard output (contrib/install.sh --bindir takes it); cargo's
# progress goes to standard error.
#
#   contrib/build.sh [--glibc] [cargo build options...]
set -euo pipefail
cd "$(dirname "$0")/.."
musl=x86_64-unknown-linux-musl

has_musl() {
	command -v musl-gcc >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$musl"
}

want=musl
if [ "${1:-}" = --glibc ]; then
	want=glibc
	shift
elif [ "$(uname -m)" != x86_64 ]; then
	want=glibc
fi
if [ "$want" = musl ] && ! has_musl; then
	if ! command -v musl-gcc >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "build.sh: installing musl-tools" >&2
		apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends musl-tools >&2 || true
	fi
	if command -v rustup >/dev/null && ! rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
		echo "build.sh: adding the Rust target $musl" >&2
		rustup target add "$musl" >&2 || true
	fi
	if ! has_musl; then
		echo "build.sh: no musl toolchain (musl-gcc and rustup's $musl target); building against glibc" >&2
		want=glibc
	fi
fi
if [ "$want" = musl ]; then
	cargo build --release --target "$musl" "$@" >&2
	echo "$PWD/target/$musl/release"
else
	cargo build --release "$@" >&2
	echo "$PWD/target/release"
fi
