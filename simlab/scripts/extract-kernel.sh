#!/bin/sh
# extract-kernel.sh KERNEL.DEB OUTDIR
#
# Unpacks the Debian kernel package into OUTDIR (dpkg-deb -x: no install, no
# root needed), runs depmod on the unpacked tree so module dependencies can be
# resolved at build time, and copies the kernel image to OUTDIR/vmlinuz.
# OUTDIR/version holds the kernel release (e.g. 6.1.0-56-amd64).
set -eu
DEB=$1
OUT=$2
rm -rf "$OUT"
mkdir -p "$OUT/root"
dpkg-deb -x "$DEB" "$OUT/root"
KV=$(ls "$OUT/root/lib/modules")
[ "$(echo "$KV" | wc -w)" -eq 1 ] || { echo "extract-kernel: expected one kernel in $DEB, found: $KV" >&2; exit 1; }
depmod -b "$OUT/root" "$KV"
cp "$OUT/root/boot/vmlinuz-$KV" "$OUT/vmlinuz"
echo "$KV" > "$OUT/version"
echo "kernel $KV unpacked in $OUT"
