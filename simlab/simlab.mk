# Simulated lab: artifacts (kernel, master initrd, test disk images) and
# nodes (ipmi_sim BMC + console relay + QEMU). Included by the top-level
# Makefile. Every artifact is rebuilt only when one of its inputs changed.

# Debian packages the simulated lab needs (installed by `make deps`).
DEB_PACKAGES += openipmi ipmitool qemu-system-x86 ipxe-qemu pxelinux syslinux \
	syslinux-common busybox-static mtools dosfstools fdisk cpio kmod gzip \
	xz-utils zstd tftpd-hpa mount nfs-ganesha nfs-ganesha-vfs
# UEFI loaders for the boot root (docs/uefi.md), OVMF to prove them, and the
# DHCP servers whose configs labctl writes (their tests run them).
DEB_PACKAGES += ipxe grub-efi-amd64-signed shim-signed ovmf dnsmasq-base isc-dhcp-server
TEST_PREREQS += artifacts

SIMLAB_DIR   := simlab
SIMLAB_OUT   := $(BUILD)/simlab
SIMLAB_DEBS  := $(SIMLAB_OUT)/debs
SIMLAB_WORK  := $(SIMLAB_OUT)/work
SIMLAB_ART   := $(SIMLAB_OUT)/artifacts
SIMLAB_ROOT  := $(SIMLAB_ART)/bootroot
SIMLAB_IMG   := $(SIMLAB_ART)/images
SIMLAB_LAB   := $(SIMLAB_OUT)/lab
SIMLAB_S     := $(SIMLAB_DIR)/scripts
NODES        ?= 2
# NET=bridge: the nodes on a bridge in the lab's own network namespace with
# dnsmasq as DHCP server (root); NET=user: QEMU user-mode networking.
# FIRMWARE: per node, comma-separated bios, uefi, uefi-secureboot (bridge).
NET          ?= user
FIRMWARE     ?=
# NFS=1: also an nfs-ganesha for diskless nfs jobs, in lab.toml's [nfs] (NET=user).
NFS          ?=
# The bridge network and UEFI nodes: iproute2 (ip netns), dnsmasq-base (the
# dnsmasq binary alone; package dnsmasq would also start a system-wide DNS
# service), ovmf; shim and GRUB signed for the test disk's UEFI boot.
DEB_PACKAGES += iproute2 dnsmasq-base ovmf shim-signed grub-efi-amd64-signed

# Kernel modules in the initrds (dependencies are added automatically).
# The master also carries common drivers of real x86 servers, so `make
# master` gives a deploy image a real lab can PXE-boot.
SIMLAB_VIRTIO_MODULES := virtio_pci virtio_blk virtio_net
# efivarfs: the master reports UEFI and Secure Boot state from the SecureBoot
# variable (docs/uefi.md).
MASTER_MODULES ?= $(SIMLAB_VIRTIO_MODULES) e1000 e1000e igb r8169 tg3 ahci ata_piix sd_mod nvme efivarfs
TESTOS_MODULES ?= $(SIMLAB_VIRTIO_MODULES)
# The NFS-root initrd: the NFSv4 client and overlayfs besides the master's
# network drivers.
NFSROOT_MODULES ?= $(SIMLAB_VIRTIO_MODULES) e1000 e1000e igb r8169 tg3 nfsv4 overlay
# Kernel arguments of the sample pxelinux config and of the test disk.
MASTER_APPEND ?= console=ttyS0,115200 panic=10 quiet
TESTOS_APPEND ?= console=ttyS0,115200 panic=10 quiet

# `make test` runs the simulated-lab tests with the freshly built binary and
# these artifacts (StartLab would otherwise build cmd/simlab itself).
export LABCTL_SIMLAB_BIN := $(abspath bin/simlab)
export LABCTL_SIMLAB_ARTIFACTS := $(abspath $(SIMLAB_ART))

SIMLAB_BOOTFILES := pxelinux.0 lpxelinux.0 ldlinux.c32 chain.c32 libcom32.c32 libutil.c32
# UEFI: iPXE (PXE and HTTP boot), and for Secure Boot Debian's signed chain:
# shim (signed by Microsoft) loads grubx64.efi, the signed GRUB network image.
# Both sit at the top: under OVMF's PXE, shim asks for grubx64.efi there.
SIMLAB_EFIFILES := efi/snponly.efi efi/ipxe.efi shimx64.efi grubx64.efi
SIMLAB_IMAGES := $(addprefix $(SIMLAB_IMG)/disk.img,.sha256 .gz.sha256 .xz.sha256 .zst.sha256)
# Diskless test OS (boot.method ramdisk and nfs): kernel, the test OS as
# an initramfs, the NFS-root initrd and the test OS as a root archive.
SIMLAB_DISKLESS := $(SIMLAB_ART)/diskless
SIMLAB_DISKLESS_FILES := $(addprefix $(SIMLAB_DISKLESS)/,vmlinuz testos.gz nfsroot.gz root.tar.zst)

.PHONY: artifacts master diskless simlab simlab-down simlab-clean

artifacts: master diskless $(SIMLAB_IMAGES) ## build the simulated lab's kernel, master initrd and test disk images (cached)

master: $(addprefix $(SIMLAB_ROOT)/,$(SIMLAB_BOOTFILES) $(SIMLAB_EFIFILES) simlab/vmlinuz simlab/master.gz simlab/pxelinux.cfg.sample) ## boot root for real labs (BIOS, UEFI, Secure Boot loaders; signed kernel + master initrd) in build/simlab/artifacts/bootroot

diskless: $(SIMLAB_DISKLESS_FILES) ## diskless test OS in build/simlab/artifacts/diskless: kernel, test OS initramfs (ramdisk), NFS-root initrd, root archive (nfs)

simlab: build artifacts ## start NODES simulated nodes (default 2; NET=bridge for a real DHCP server; NFS=1 for diskless nfs jobs) and write their lab config; last line: `lab: PATH`
	bin/simlab up --nodes $(NODES) --dir $(SIMLAB_LAB) --artifacts $(SIMLAB_ART) --device-types $(abspath device-types) \
		--network $(NET) --labctl $(abspath bin/labctl) $(if $(FIRMWARE),--firmware $(FIRMWARE)) $(if $(NFS),--nfs)

simlab-down: ## stop the nodes `make simlab` started (by pid files)
	@if [ -x bin/simlab ]; then bin/simlab down --dir $(SIMLAB_LAB); else echo "no bin/simlab: nothing started"; fi

simlab-clean: simlab-down ## remove the simulated lab's build outputs (keeps the downloaded kernel .deb)
	rm -rf $(SIMLAB_WORK) $(SIMLAB_ART) $(SIMLAB_LAB)

# --- kernel ------------------------------------------------------------------
$(SIMLAB_DEBS)/kernel.deb: $(SIMLAB_S)/fetch-kernel.sh
	$(SIMLAB_S)/fetch-kernel.sh $(SIMLAB_DEBS)

$(SIMLAB_WORK)/kernel/vmlinuz: $(SIMLAB_DEBS)/kernel.deb $(SIMLAB_S)/extract-kernel.sh
	$(SIMLAB_S)/extract-kernel.sh $< $(SIMLAB_WORK)/kernel

# --- initrds -----------------------------------------------------------------
SIMLAB_INITRD_INPUTS := $(SIMLAB_WORK)/kernel/vmlinuz $(SIMLAB_S)/build-initrd.sh \
	$(SIMLAB_DIR)/rootfs/common.sh $(SIMLAB_DIR)/rootfs/udhcpc.script /bin/busybox

# The master's interactive shell: Debian's dynamically linked busybox, whose
# shell runs what PATH finds (see fetch-busybox.sh).
$(SIMLAB_WORK)/master-shell/busybox: $(SIMLAB_S)/fetch-busybox.sh
	$(SIMLAB_S)/fetch-busybox.sh $(SIMLAB_DEBS) $@

$(SIMLAB_ROOT)/simlab/master.gz: $(SIMLAB_INITRD_INPUTS) $(SIMLAB_DIR)/rootfs/master-init /usr/bin/zstd /usr/bin/tee \
		$(SIMLAB_WORK)/master-shell/busybox
	@mkdir -p $(@D)
	MASTER_SHELL=$(abspath $(SIMLAB_WORK)/master-shell/busybox) $(SIMLAB_S)/build-initrd.sh master $(SIMLAB_WORK)/kernel $@ "$(MASTER_MODULES)"

$(SIMLAB_WORK)/testos.gz: $(SIMLAB_INITRD_INPUTS) $(SIMLAB_DIR)/rootfs/testos-init
	$(SIMLAB_S)/build-initrd.sh testos $(SIMLAB_WORK)/kernel $@ "$(TESTOS_MODULES)"

$(SIMLAB_DISKLESS)/nfsroot.gz: $(SIMLAB_INITRD_INPUTS) $(SIMLAB_DIR)/rootfs/nfsroot-init /usr/bin/mount
	@mkdir -p $(@D)
	$(SIMLAB_S)/build-initrd.sh nfsroot $(SIMLAB_WORK)/kernel $@ "$(NFSROOT_MODULES)"

$(SIMLAB_DISKLESS)/root.tar.zst: $(SIMLAB_INITRD_INPUTS) $(SIMLAB_DIR)/rootfs/testos-init /usr/bin/zstd
	@mkdir -p $(@D)
	ROOTFS_TAR=1 $(SIMLAB_S)/build-initrd.sh testos $(SIMLAB_WORK)/kernel $@ "$(TESTOS_MODULES)"

$(SIMLAB_DISKLESS)/testos.gz: $(SIMLAB_WORK)/testos.gz
	@mkdir -p $(@D)
	cp $< $@

$(SIMLAB_DISKLESS)/vmlinuz: $(SIMLAB_WORK)/kernel/vmlinuz
	@mkdir -p $(@D)
	cp $< $@

# --- boot root ---------------------------------------------------------------
$(SIMLAB_ROOT)/simlab/vmlinuz: $(SIMLAB_WORK)/kernel/vmlinuz
	@mkdir -p $(@D)
	cp $< $@

$(SIMLAB_ROOT)/%.0: /usr/lib/PXELINUX/%.0
	@mkdir -p $(@D)
	cp $< $@

$(SIMLAB_ROOT)/%.c32: /usr/lib/syslinux/modules/bios/%.c32
	@mkdir -p $(@D)
	cp $< $@

$(SIMLAB_ROOT)/efi/%.efi: /usr/lib/ipxe/%.efi
	@mkdir -p $(@D)
	cp $< $@

$(SIMLAB_ROOT)/shimx64.efi: /usr/lib/shim/shimx64.efi.signed
	@mkdir -p $(@D)
	cp $< $@

$(SIMLAB_ROOT)/grubx64.efi: /usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed
	@mkdir -p $(@D)
	cp $< $@

$(SIMLAB_ROOT)/simlab/pxelinux.cfg.sample: $(SIMLAB_DIR)/simlab.mk
	@mkdir -p $(@D)
	printf '%s\n' \
	  '# Sample pxelinux config for the simlab master (copy to pxelinux.cfg/default' \
	  '# or pxelinux.cfg/01-<mac> of your TFTP root). Paths are relative to the' \
	  '# TFTP root that holds pxelinux.0, ldlinux.c32 and simlab/.' \
	  'DEFAULT master' \
	  'PROMPT 0' \
	  'TIMEOUT 0' \
	  'LABEL master' \
	  '  KERNEL simlab/vmlinuz' \
	  '  INITRD simlab/master.gz' \
	  '  APPEND $(MASTER_APPEND)' \
	  'LABEL local' \
	  '  COM32 chain.c32' \
	  '  APPEND hd0 0' >$@

# --- test disk images ----------------------------------------------------------
$(SIMLAB_IMG)/disk.img: $(SIMLAB_WORK)/kernel/vmlinuz $(SIMLAB_WORK)/testos.gz $(SIMLAB_S)/build-disk.sh \
		/usr/lib/shim/shimx64.efi.signed /usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed
	@mkdir -p $(@D)
	DISK_APPEND="$(TESTOS_APPEND)" $(SIMLAB_S)/build-disk.sh $(SIMLAB_WORK)/kernel/vmlinuz $(SIMLAB_WORK)/testos.gz $@ 64

$(SIMLAB_IMG)/disk.img.gz: $(SIMLAB_IMG)/disk.img
	gzip -n -6 -c $< >$@.tmp && mv $@.tmp $@

$(SIMLAB_IMG)/disk.img.xz: $(SIMLAB_IMG)/disk.img
	xz -6 -T1 -c $< >$@.tmp && mv $@.tmp $@

$(SIMLAB_IMG)/disk.img.zst: $(SIMLAB_IMG)/disk.img
	zstd -q -19 -c $< >$@.tmp && mv $@.tmp $@

$(SIMLAB_IMG)/%.sha256: $(SIMLAB_IMG)/%
	cd $(@D) && sha256sum $* >$*.sha256.tmp && mv $*.sha256.tmp $*.sha256
