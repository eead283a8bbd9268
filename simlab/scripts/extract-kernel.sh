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
# Secure Boot nodes boot this kernel through shim and GRUB, which refuse an
# unsigned one: it must carry an Authenticode signature (PE32+ certificate
# table, data directory 4, non-empty), as linux-image-amd64's kernel does
# (the -unsigned package's does not).
u32() { od -An -tu4 -j"$2" -N4 "$1" | tr -d ' '; }
pe=$(u32 "$OUT/vmlinuz" 60)
magic=$(od -An -tu2 -j$((pe + 24)) -N2 "$OUT/vmlinuz" | tr -d ' ')
[ "$magic" = 523 ] || { echo "extract-kernel: $DEB: vmlinuz is not a PE32+ EFI image" >&2; exit 1; }
sigsize=$(u32 "$OUT/vmlinuz" $((pe + 24 + 112 + 4 * 8 + 4)))
[ "$sigsize" -gt 0 ] || { echo "extract-kernel: $DEB: vmlinuz is not signed (Secure Boot would refuse it): use linux-image-amd64's signed kernel" >&2; exit 1; }
echo "kernel signature: $sigsize bytes"
echo "$KV" > "$OUT/version"
echo "kernel $KV unpacked in $OUT"
