#!/bin/sh
# Install Stargate under a prefix: binaries, git subcommand links, hook links
# for the older machine-wide core.hooksPath, and man pages. Safe to run again. Sets no
# git config: each repository Stargate manages gets its own hooks (git stargate manage).
#
#   contrib/install.sh [--prefix PREFIX] [--bindir DIR]
#
# PREFIX defaults to /usr/local. DIR (where cargo put the binaries) defaults to
# the newer of contrib/build.sh's two builds in this repository: static, against
# musl (target/x86_64-unknown-linux-musl/release), or against glibc (target/release).
# DESTDIR, if set, is prepended to every installed path but not to the targets of
# the hook links.
set -eu

usage() {
	echo "usage: contrib/install.sh [--prefix PREFIX] [--bindir DIR]" >&2
	exit 129
}

die() {
	echo "install.sh: $*" >&2
	exit 1
}

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=/usr/local
bindir=

while [ $# -gt 0 ]; do
	case $1 in
	--prefix) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
	--prefix=*) prefix=${1#--prefix=}; shift ;;
	--bindir) [ $# -ge 2 ] || usage; bindir=$2; shift 2 ;;
	--bindir=*) bindir=${1#--bindir=}; shift ;;
	-h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) usage ;;
	esac
done

case $prefix in
/*) ;;
*) prefix=$PWD/$prefix ;; # the hook links need an absolute target
esac
if [ -z "$bindir" ]; then
	bindir=$repo/target/release
	musl=$repo/target/x86_64-unknown-linux-musl/release
	if [ -x "$musl/stargate-hook" ] && { [ ! -x "$bindir/stargate-hook" ] || [ "$musl/stargate-hook" -nt "$bindir/stargate-hook" ]; }; then
		bindir=$musl
	fi
	echo "install.sh: installing the binaries of $bindir" >&2
fi
[ -x "$bindir/stargate-hook" ] ||
	die "$bindir/stargate-hook not found; build first: contrib/build.sh"

dest=${DESTDIR:-}$prefix

say() {
	echo "installed $*"
}

# Copy $1 to $2 with mode $3 through a temporary file and a rename, so that a
# running program (an agent, a hook) is never overwritten in place.
put() {
	tmp=$(dirname "$2")/.$(basename "$2").tmp.$$
	cp "$1" "$tmp"
	chmod "$3" "$tmp"
	mv -f "$tmp" "$2"
	say "$2"
}

# The same for generated text on standard input.
put_text() {
	tmp=$(dirname "$1")/.$(basename "$1").tmp.$$
	cat >"$tmp"
	chmod "$2" "$tmp"
	mv -f "$tmp" "$1"
	say "$1"
}

mkdir -p "$dest/bin" "$dest/share/stargate/githooks" "$dest/share/stargate/githooks-minimal"

put "$bindir/stargate-hook" "$dest/bin/stargate-hook" 755
if [ -f "$bindir/git-remote-stargate" ]; then
	put "$bindir/git-remote-stargate" "$dest/bin/git-remote-stargate" 755
fi
for link in git-stargate git-kv; do
	rm -f "$dest/bin/$link"
	ln -s stargate-hook "$dest/bin/$link"
	say "$dest/bin/$link -> stargate-hook"
done

# Hooks are symlinks to the multi-call binary, which dispatches on argv[0]: a shell shim
# would cost one more process (about 1 ms) on each of the three hook runs of every push.
# The target is absolute: hooks run with the Git server's PATH, which need not hold PREFIX/bin.
# One link for every hook git knows (githooks/ has a shim for each), for machines that
# still set core.hooksPath for the whole machine, as earlier versions asked: in a
# repository Stargate does not manage they only run the repository's own hook, so the
# setting disables none of them. Managed repositories have their own directory.
for shim in "$repo"/githooks/*; do
	hook=$(basename "$shim")
	rm -f "$dest/share/stargate/githooks/$hook"
	ln -s "$prefix/bin/stargate-hook" "$dest/share/stargate/githooks/$hook"
	say "$dest/share/stargate/githooks/$hook -> $prefix/bin/stargate-hook"
done

# Stargate's own hooks and nothing else, for the same older setting on machines whose
# repositories have no hooks of their own (core.hooksPath replaces every repository's hooks/). A one-ref push then
# starts three hook processes instead of six (stargate-hook(1), Hooks directories);
# proc-receive runs only for the git kv changes pushed to refs/for/kv/.
for hook in pre-receive proc-receive reference-transaction; do
	rm -f "$dest/share/stargate/githooks-minimal/$hook"
	ln -s "$prefix/bin/stargate-hook" "$dest/share/stargate/githooks-minimal/$hook"
	say "$dest/share/stargate/githooks-minimal/$hook -> $prefix/bin/stargate-hook"
done

for page in "$repo"/man/*.1 "$repo"/man/*.7; do
	[ -f "$page" ] || continue
	section=${page##*.}
	mkdir -p "$dest/share/man/man$section"
	put "$page" "$dest/share/man/man$section/$(basename "$page")" 644
done
