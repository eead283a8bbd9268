#!/bin/sh
# build-disk.sh VMLINUZ TESTOS_INITRD OUT_IMG [SIZE_MIB]
#
# Builds the test disk image without root and without loop mounts: an MBR
# (syslinux mbr.bin) with one bootable FAT16 partition at 1 MiB holding
# syslinux, the kernel and the test OS initramfs. The machine boots it with
# no network: BIOS -> MBR -> SYSLINUX -> kernel -> test OS login prompt.
#
# The same partition boots on UEFI, with Secure Boot too: Debian's signed
# shim as the removable-media loader \EFI\BOOT\BOOTX64.EFI, which loads
# Debian's signed GRUB beside it, which reads \EFI\debian\grub.cfg (its
# built-in prefix) and boots the same kernel (Debian's, signed) and initramfs
# (not verified by Secure Boot). No fbx64.efi: shim would run the fallback
# loader, which writes boot entries and resets the machine.
# UEFI=0 leaves the EFI files out.
#
# Kernel arguments: $DISK_APPEND (default "console=ttyS0,115200 panic=10 quiet").
# Reproducible: fixed volume id and file times (mkfs.fat --invariant, mcopy -m).
# Needs: fdisk (sfdisk), dosfstools, mtools, syslinux, syslinux-common,
# shim-signed, grub-efi-amd64-signed.
set -eu
KERNEL=$1
INITRD=$2
OUT=$3
SIZE_MIB=${4:-64}
APPEND=${DISK_APPEND:-console=ttyS0,115200 panic=10 quiet}
EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
export MTOOLS_SKIP_CHECK=1
# mtools (also under syslinux --install) stamps files with this time.
export SOURCE_DATE_EPOCH="$EPOCH"

T=$(mktemp -d "${OUT}.work.XXXXXX")
trap 'rm -rf "$T"' EXIT
IMG=$T/disk.img
START=2048 # partition start in 512-byte sectors (1 MiB)
SECTORS=$((SIZE_MIB * 2048 - START))

truncate -s "${SIZE_MIB}M" "$IMG"
printf 'label: dos\nlabel-id: 0x51ab0001\nstart=%d, type=6, bootable\n' "$START" | sfdisk -q "$IMG"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$IMG" bs=440 count=1 conv=notrunc status=none
# -h: hidden sectors = partition start (needed by the FAT boot sector).
SOURCE_DATE_EPOCH=$EPOCH mkfs.vfat -F 16 -h "$START" -n SIMLAB --invariant \
	--offset="$START" "$IMG" $((SECTORS / 2)) >/dev/null

cat >"$T/syslinux.cfg" <<CFG
DEFAULT testos
PROMPT 0
TIMEOUT 0
LABEL testos
  KERNEL vmlinuz
  INITRD testos.gz
  APPEND $APPEND
CFG
cp "$KERNEL" "$T/vmlinuz"
cp "$INITRD" "$T/testos.gz"
touch -d "@$EPOCH" "$T/vmlinuz" "$T/testos.gz" "$T/syslinux.cfg"
P="$IMG@@$((START * 512))"
mcopy -m -i "$P" "$T/vmlinuz" "$T/testos.gz" "$T/syslinux.cfg" ::/
# The mtools-based installer writes ldlinux.sys/ldlinux.c32 and the boot sector.
syslinux --offset $((START * 512)) --install "$IMG"

if [ "${UEFI:-1}" = 1 ]; then
	SHIM=${SHIM:-/usr/lib/shim/shimx64.efi.signed}
	GRUB=${GRUB_EFI:-/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed}
	cat >"$T/grub.cfg" <<CFG
set timeout=0
set default=0
menuentry testos {
	linux /vmlinuz $APPEND
	initrd /testos.gz
}
CFG
	cp "$SHIM" "$T/BOOTX64.EFI"
	cp "$GRUB" "$T/grubx64.efi"
	touch -d "@$EPOCH" "$T/BOOTX64.EFI" "$T/grubx64.efi" "$T/grub.cfg"
	mmd -i "$P" ::/EFI ::/EFI/BOOT ::/EFI/debian
	mcopy -m -i "$P" "$T/BOOTX64.EFI" "$T/grubx64.efi" ::/EFI/BOOT/
	mcopy -m -i "$P" "$T/grub.cfg" ::/EFI/debian/
fi
mv "$IMG" "$OUT"
echo "disk image: $OUT (${SIZE_MIB} MiB, BIOS$([ "${UEFI:-1}" = 1 ] && echo ' and UEFI (shim, GRUB)'), kernel args: $APPEND)"
