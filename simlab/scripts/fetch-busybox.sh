#!/bin/sh
# fetch-busybox.sh DEBDIR OUT
#
# Makes sure OUT is the busybox binary of Debian's `busybox` package (the
# dynamically linked build), for the master's interactive shell. Its shell
# runs the programs it finds on PATH, where busybox-static's (the package
# the initrds are built from) runs its own applets whatever PATH holds, so
# the master's coreutils tee and sha256sum would never run. The .deb is
# downloaded once with `apt-get download` (no install: it would replace
# busybox-static) and kept in DEBDIR.
set -eu
DEBDIR=$1
OUT=$2
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
mkdir -p "$DEBDIR"
cd "$DEBDIR"

deb=$(ls busybox_*_amd64.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
	# apt-get download writes into the current directory; as root it would
	# warn about the _apt sandbox user, which cannot write here.
	apt-get download -q -o APT::Sandbox::User=root busybox || {
		apt-get update -qq
		apt-get download -q -o APT::Sandbox::User=root busybox
	}
	deb=$(ls busybox_*_amd64.deb | head -n 1)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
mkdir -p "$(dirname "$OUT")"
cp "$tmp/bin/busybox" "$OUT"
echo "master shell: $OUT (from $DEBDIR/$deb)"
