#!/bin/sh
# build-initrd.sh FLAVOUR KERNELDIR OUT "MODULES"
#
# Builds a busybox initramfs (newc cpio, gzip) from Debian packages only:
#   FLAVOUR    master: the PXE deploy environment (root shell, "master# ")
#              testos: the OS on the test disk image (login root/test, "testos# "),
#                      also booted from RAM and, as a tar archive, over NFS
#              nfsroot: mounts nfsroot=SERVER:/PATH over NFSv4 read-only with a
#                      tmpfs overlay and switches to its /sbin/init
#   ROOTFS_TAR (environment) set: write the tree as a zstd tar archive (a root
#              file system for NFS, with /sbin/init) to OUT instead of a cpio
#   KERNELDIR  output of extract-kernel.sh (unpacked kernel + depmod data)
#   OUT        the compressed image to write
#   MODULES    module names; they and their dependencies are copied and loaded
#              in dependency order by /init (no modprobe in the image)
#
# The result is reproducible: fixed file times, sorted cpio, gzip -n, fixed
# password salt. Needs: busybox-static, cpio, gzip, kmod, zstd (master only).
set -eu
FLAVOUR=$1
KDIR=$2
OUT=$3
MODULES=$4
HERE=$(cd "$(dirname "$0")/.." && pwd)
KV=$(cat "$KDIR/version")
EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

R=$(mktemp -d "${OUT}.root.XXXXXX")
trap 'rm -rf "$R"' EXIT
mkdir -p "$R/bin" "$R/sbin" "$R/usr/bin" "$R/usr/sbin" "$R/etc" "$R/proc" "$R/sys" \
	"$R/dev" "$R/run" "$R/tmp" "$R/root" "$R/lib/modules" "$R/lib/simlab" \
	"$R/usr/share/udhcpc"

# busybox-static and its applets (as symlinks, all in /bin).
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do
	[ "$a" = busybox ] || ln -s busybox "$R/bin/$a"
done

# Modules and their dependencies, in load order.
: >"$R/lib/modules/load.list"
for m in $MODULES; do
	deps=$(modprobe -d "$KDIR/root" -S "$KV" --show-depends "$m" | awk '/^insmod/ {print $2}')
	[ -n "$deps" ] || { echo "build-initrd: module $m not found in $KV (or built in)" >&2; exit 1; }
	for f in $deps; do
		b=$(basename "$f")
		grep -qx "$b" "$R/lib/modules/load.list" && continue
		cp "$f" "$R/lib/modules/$b"
		echo "$b" >>"$R/lib/modules/load.list"
	done
done

cp "$HERE/rootfs/common.sh" "$R/lib/simlab/common.sh"
cp "$HERE/rootfs/udhcpc.script" "$R/usr/share/udhcpc/default.script"
chmod 755 "$R/usr/share/udhcpc/default.script"
cp "$HERE/rootfs/$FLAVOUR-init" "$R/init"
chmod 755 "$R/init"
echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
echo "root:x:0:" >"$R/etc/group"

case $FLAVOUR in
master)
	# busybox 1.35 has no zstd: add Debian's zstd with the libraries it links
	# (Debian ships no static zstd). zstdcat is zstd called by that name.
	cp /usr/bin/zstd "$R/usr/bin/zstd"
	ln -s zstd "$R/usr/bin/zstdcat"
	# coreutils' sha256sum hashes ~1.5x faster than busybox's (64 MiB: ~12 s
	# under TCG with busybox); it replaces the applet.
	rm "$R/bin/sha256sum"
	cp /usr/bin/sha256sum "$R/bin/sha256sum"
	# coreutils' tee copies 8 KiB at a time where busybox's copies 1 KiB:
	# it feeds the stream hash while the image is written, and busybox's
	# costs ~1.5 s of the master's CPU for a 12 MB zstd image under TCG.
	rm "$R/bin/tee"
	cp /usr/bin/tee "$R/bin/tee"
	# The console's shell is MASTER_SHELL (Debian's dynamically linked
	# busybox), which runs those two from PATH: busybox-static's shell runs
	# its own applets whatever PATH holds. init keeps busybox-static (no
	# dynamic loading for every command while the master boots).
	: "${MASTER_SHELL:?build-initrd: master needs MASTER_SHELL (see fetch-busybox.sh)}"
	mkdir -p "$R/usr/lib/master-shell"
	cp "$MASTER_SHELL" "$R/usr/lib/master-shell/busybox"
	ln -s busybox "$R/usr/lib/master-shell/sh"
	for lib in $(ldd /usr/bin/zstd /usr/bin/sha256sum /usr/bin/tee "$MASTER_SHELL" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | sort -u); do
		mkdir -p "$R$(dirname "$lib")"
		cp -L "$lib" "$R$lib"
	done
	echo "simlab master" >"$R/etc/issue"
	;;
nfsroot)
	# busybox's mount speaks NFSv2/3 only: util-linux's mount (Debian
	# package mount) passes NFSv4 options to the kernel.
	cp /usr/bin/mount "$R/bin/mount.util"
	for lib in $(ldd /usr/bin/mount | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | sort -u); do
		mkdir -p "$R$(dirname "$lib")"
		cp -L "$lib" "$R$lib"
	done
	echo "simlab nfsroot" >"$R/etc/issue"
	;;
testos)
	hash=$(/bin/busybox mkpasswd -m sha512 -S simlabsalt test)
	echo "root:$hash:19000:0:99999:7:::" >"$R/etc/shadow"
	chmod 600 "$R/etc/shadow"
	echo "export PS1='testos# '" >"$R/etc/profile"
	printf 'simlab test OS \\n (\\l)\n\n' >"$R/etc/issue"
	;;
*)
	echo "build-initrd: unknown flavour $FLAVOUR" >&2
	exit 1
	;;
esac

if [ -n "${ROOTFS_TAR:-}" ]; then
	ln -s ../init "$R/sbin/init"
	find "$R" -exec touch -h -d "@$EPOCH" {} +
	tar -C "$R" --sort=name --numeric-owner --owner=0 --group=0 --mtime="@$EPOCH" -cf - . |
		zstd -q -19 -c >"$OUT.tmp"
	mv "$OUT.tmp" "$OUT"
	echo "$FLAVOUR root archive: $OUT ($(wc -c <"$OUT") bytes)"
	exit 0
fi
find "$R" -exec touch -h -d "@$EPOCH" {} +
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet --reproducible -R 0:0) |
	gzip -9 -n >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$FLAVOUR initrd: $OUT ($(wc -c <"$OUT") bytes, modules: $(tr '\n' ' ' <"$R/lib/modules/load.list"))"
