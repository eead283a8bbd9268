#!/bin/sh
# fetch-kernel.sh DEBDIR
#
# Makes sure DEBDIR/kernel.deb is Debian's current x86-64 kernel package, the
# one the linux-image-amd64 metapackage depends on (linux-image-6.1.0-NN-amd64
# on Debian 12). The .deb is downloaded once with `apt-get download` (no
# install) and kept: later runs reuse it, so the artifacts do not change when
# Debian publishes a new kernel. Delete DEBDIR to move to a newer kernel.
set -eu
DEBDIR=$1
mkdir -p "$DEBDIR"
cd "$DEBDIR"

deb=$(ls linux-image-*-amd64_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	if [ -z "$pkg" ]; then
		# An empty package list (fresh machine): read it once and retry.
		apt-get update -qq
		pkg=$(apt-cache depends linux-image-amd64 |
			awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	fi
	[ -n "$pkg" ] || { echo "fetch-kernel: no linux-image package behind linux-image-amd64" >&2; exit 1; }
	# apt-get download writes into the current directory; as root it would
	# warn about the _apt sandbox user, which cannot write here.
	apt-get download -q -o APT::Sandbox::User=root "$pkg"
	deb=$(ls linux-image-*-amd64_*.deb | head -n 1)
fi
# A stable name for make; a hard link keeps the original name for people.
ln -f "$deb" kernel.deb
echo "kernel package: $DEBDIR/$deb"
