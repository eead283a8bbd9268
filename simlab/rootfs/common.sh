# Shared start-up steps of the simlab initramfs images, sourced by /init.
# Kept small and quiet: under software emulation every printed line costs time.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root

simlab_mounts() {
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev
	mkdir -p /dev/pts /run /tmp
	mount -t devpts devpts /dev/pts
}

# Loads the modules listed in /lib/modules/load.list, already in dependency
# order (resolved at build time, so no depmod/modprobe is needed here).
simlab_modules() {
	while read -r m; do
		insmod "/lib/modules/$m" 2>/dev/null
	done </lib/modules/load.list
}

# Says how the machine booted: "firmware: bios", or "firmware: uefi,
# secure boot on|off" from the SecureBoot variable (efivarfs: 4 bytes of
# attributes, then the value).
simlab_firmware() {
	if [ ! -d /sys/firmware/efi ]; then
		echo "firmware: bios"
		return 0
	fi
	mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
	sb=off
	v=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
	# Read from the start: efivarfs files do not seek (od -j reads nothing).
	if [ -r "$v" ]; then
		set -- $(od -An -tu1 -N5 "$v")
		[ "${5:-}" = 1 ] && sb=on
	fi
	echo "firmware: uefi, secure boot $sb"
}

# Brings every NIC up and asks DHCP on each in turn until one gets a lease
# (real machines may have several ports, only one of them cabled).
simlab_network() {
	ip link set lo up
	i=0
	while [ -z "$(ls /sys/class/net | grep -v '^lo$')" ] && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	for n in $(ls /sys/class/net); do
		[ "$n" = lo ] || ip link set "$n" up
	done
	for n in $(ls /sys/class/net); do
		[ "$n" = lo ] && continue
		udhcpc -i "$n" -s /usr/share/udhcpc/default.script -n -q -t 3 -T 1 >/dev/null 2>&1 && return 0
	done
	echo "simlab: no DHCP lease on any interface" >&2
	return 1
}
