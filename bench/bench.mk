# labctl's bench (issue 6): labctl against the programs a lab would
# otherwise use. Included by the top-level Makefile.
#   make bench         all cases, 3 rounds, servers interleaved (~2 h on 2 CPUs)
#   make bench-quick   a small version of every case (proves the bench works; run by make test)
# Report: markdown on stdout, also kept in build/bench/report.md (bench-quick:
# report-quick.md); progress and per-run lines on stderr.

# Peers: tftpd-hpa, dnsmasq (TFTP only; dnsmasq-base has no system service),
# nginx, busybox httpd; atftpd is unpacked beside (its package conflicts with
# tftpd-hpa). iproute2 brings up loopback in the bench's network namespace.
DEB_PACKAGES += tftpd-hpa dnsmasq-base nginx-light busybox-static iproute2 atftp curl tftp-hpa wrk
# Case 5 runs LAVA's lava-run (unpacked, below) with Debian's python3 and
# these modules.
DEB_PACKAGES += python3-pexpect python3-yaml python3-jinja2 python3-voluptuous python3-requests \
  python3-setproctitle python3-netifaces python3-pyudev python3-magic python3-configobj \
  python3-tz python3-aiohttp
# Case hosts runs Debian's PostgreSQL server (started by the bench itself,
# as store/pgtest starts it for the store's tests).
DEB_PACKAGES += postgresql
TEST_PREREQS += bench-quick

BENCH_DIR    := $(BUILD)/bench
BENCH_ATFTPD := $(BENCH_DIR)/atftpd/usr/sbin/atftpd
BENCH_LAVA   := $(BENCH_DIR)/lava/2023.01
LAVA_DEBS    := lava-dispatcher lava-common lava-dispatcher-host lava-server

.PHONY: bench bench-quick bench-bin

bench-bin: ## build bin/labctl-bench
	$(GO) build -o bin/labctl-bench ./bench/cmd/labctl-bench

# atftpd from its .deb, unpacked (not installed: it conflicts with tftpd-hpa).
$(BENCH_ATFTPD):
	mkdir -p $(BENCH_DIR)/debs
	cd $(BENCH_DIR)/debs && apt-get download atftpd
	dpkg-deb -x $$(ls -t $(BENCH_DIR)/debs/atftpd_*.deb | head -1) $(BENCH_DIR)/atftpd
	touch $@

# LAVA 2023.01 (Debian 12) for case 5, unpacked, never installed (the
# packages pull systemd-sysv and libguestfs). If apt cannot get them, the
# bench says so in case 5 and runs labctl alone.
$(BENCH_LAVA)/usr/bin/lava-run:
	rm -rf $(BENCH_DIR)/lava/debs $(BENCH_LAVA) $(BENCH_LAVA)-fix && mkdir -p $(BENCH_DIR)/lava/debs
	cd $(BENCH_DIR)/lava/debs && apt-get download $(LAVA_DEBS) \
	  || echo "LAVA's .debs are not available here: case 5 runs labctl alone"
	for d in $(BENCH_DIR)/lava/debs/*.deb; do [ -f "$$d" ] && dpkg-deb -x "$$d" $(BENCH_LAVA).tmp; done; \
	  if [ -f $(BENCH_LAVA).tmp/usr/bin/lava-run ]; then mv $(BENCH_LAVA).tmp $(BENCH_LAVA); else rm -rf $(BENCH_LAVA).tmp; fi

bench: deps build bench-bin artifacts $(BENCH_ATFTPD) $(BENCH_LAVA)/usr/bin/lava-run ## labctl vs tftpd-hpa/atftpd/dnsmasq/nginx/busybox/LAVA: all cases (root; ~2 h)
	bin/labctl-bench run -work $(BENCH_DIR) | tee $(BENCH_DIR)/report.md

bench-quick: deps build bench-bin artifacts $(BENCH_ATFTPD) ## a small version of every bench case (~1-2 min; part of make test)
	bin/labctl-bench run -quick -work $(BENCH_DIR) > $(BENCH_DIR)/report-quick.md 2>$(BENCH_DIR)/report-quick.log \
	  || { cat $(BENCH_DIR)/report-quick.md $(BENCH_DIR)/report-quick.log; exit 1; }
	@grep -h '^- case' $(BENCH_DIR)/report-quick.md
