# labctl: the two commands a new user needs are `make demo` and `make test`.
# Every target installs what it needs (Debian packages as root, Go modules).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Go: from PATH, else where the machines install it.
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BUILD   ?= build
GOFLAGS_TEST ?= -race -count=1 -timeout 45m

# Debian packages the project needs; fragments add theirs with +=.
# postgresql: the store's tests start their own server (store/pgtest).
# prometheus: its promtool checks the /metrics scrape and the alert rules.
# chromium: the web UI's tests drive it (web/webtest); npm: web-check
# (Debian's, unless an npm is installed already, e.g. with another nodejs).
DEB_PACKAGES := ca-certificates tmux postgresql prometheus chromium $(if $(shell command -v npm),,npm)

-include simlab/simlab.mk
-include bench/bench.mk

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# The shell that installs the missing Debian packages (quiet when all are there).
# Installing starts no system service (policy-rc.d, for the install only):
# the tests run their own PostgreSQL, nfs-ganesha and DHCP servers, and a
# system one would hold their ports or answer on the machine's networks.
DEPS_INSTALL = missing=$$(for p in $(sort $(DEB_PACKAGES)); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then policy=/usr/sbin/policy-rc.d; \
	    printf '\043!/bin/sh\nexit 101\n' >$$policy && chmod 755 $$policy; fi; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  rc=$$?; if [ -n "$$policy" ]; then rm -f $$policy; fi; [ $$rc = 0 ]; \
	fi

# Goals that use installed files (pxelinux.0, busybox, ...) install the
# packages while make reads this file, before it looks at any rule: make
# caches what a directory holds, so a file installed by a rule in the
# middle of the run stays unseen ("No rule to make target") until the next.
DEPS_GOALS := test demo artifacts master simlab bench bench-quick web-assets web-check web-screenshots
ifneq ($(filter $(DEPS_GOALS),$(MAKECMDGOALS)),)
$(shell $(DEPS_INSTALL) >&2)
ifneq ($(.SHELLSTATUS),0)
$(error installing the Debian packages failed: run `make deps` to see why)
endif
DEPS_DONE := 1
endif

.PHONY: deps
deps: ## install missing Debian packages (as root; quiet when all are there)
	@$(if $(DEPS_DONE),:,$(DEPS_INSTALL))

.PHONY: build
# Static binaries (no cgo): they run on any Linux, and a `labctl run` maps
# no libc (bench/RESULTS.md: its peak resident set). Nothing in cmd/ needs
# cgo: Go's own DNS resolver serves it. Tests still build with cgo (-race
# needs it).
#
# bin/labctl-run is labctl with only its run command (-tags labctl_run):
# `labctl run` hands its process to it when it is installed beside labctl,
# so that a job run without a daemon maps a binary half the size. Both get
# one stamp, of the sources they are built from, and labctl hands over only
# to a labctl-run with its own stamp (cmd/labctl/handoff.go).
build: ## build bin/labctl, bin/labctl-run and bin/simlab
	@set -e; stamp=$$({ git rev-parse HEAD; git diff HEAD; } 2>/dev/null | sha256sum | cut -c1-16); \
	echo "building bin/labctl, bin/labctl-run, bin/simlab (stamp $$stamp)"; \
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.buildStamp=$$stamp" -o bin/ ./cmd/...; \
	CGO_ENABLED=0 $(GO) build -tags labctl_run -ldflags "-X main.buildStamp=$$stamp" -o bin/labctl-run ./cmd/labctl

# The systems labctl (the CLI) must build for besides Linux.
CROSS_TARGETS := darwin/amd64 darwin/arm64 windows/amd64

.PHONY: cross
cross: ## build cmd/labctl for darwin/amd64, darwin/arm64, windows/amd64 (into build/cross)
	@set -e; for t in $(CROSS_TARGETS); do \
	  os=$${t%/*}; arch=$${t#*/}; \
	  echo "labctl for $$os/$$arch"; \
	  GOOS=$$os GOARCH=$$arch $(GO) build -o $(BUILD)/cross/$$os-$$arch/ ./cmd/labctl; \
	done

.PHONY: vet
vet: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Fuzzing: every fuzz target (found by scripts/fuzz.sh) for FUZZTIME each.
# Their corpora are committed under each package's testdata/fuzz, which
# plain `go test` replays.
FUZZTIME ?= 3s

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 3s)
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

# The web UI's xterm.js: from npm, pinned by web/ui/package-lock.json,
# vendored into web/assets/vendor (committed: go build needs nothing else).
.PHONY: web-assets
web-assets: ## copy xterm.js from npm (web/ui/package-lock.json) into web/assets/vendor
	scripts/web-vendor.sh copy

.PHONY: web-check
web-check: ## check that web/assets/vendor is byte for byte what the lockfile pins
	scripts/web-vendor.sh check

.PHONY: web-screenshots
web-screenshots: deps build artifacts ## run TestLabWeb and save its pages as docs/web-*.png (the README's pictures)
	LABCTL_REQUIRE_SIMLAB=1 LABCTL_BIN=$(CURDIR)/bin/labctl LABCTL_SCREENSHOT_DIR=$(CURDIR)/docs \
	  $(GO) test -count=1 -run 'TestLabWeb$$' ./cmd/labctl

.PHONY: test
test: deps build vet cross fuzz web-check $(TEST_PREREQS) ## the whole test suite: fuzzing, unit tests, simulated-lab tests (needs root)
	LABCTL_REQUIRE_SIMLAB=1 LABCTL_BIN=$(CURDIR)/bin/labctl $(GO) test $(GOFLAGS_TEST) ./...

DEMO_LAB := $(BUILD)/demo

.PHONY: demo
demo: deps build artifacts ## run the smoke job end to end on a simulated node, print its results, tear the node down
	@bin/simlab down --dir $(DEMO_LAB) >/dev/null 2>&1 || true
	@set -e; trap 'bin/simlab down --dir $(DEMO_LAB) >/dev/null' EXIT; \
	lab=$$(bin/simlab up --nodes 1 --dir $(DEMO_LAB) --artifacts $(SIMLAB_ART) --device-types $(abspath device-types) | tee /dev/stderr | sed -n 's/^lab: //p'); \
	bin/labctl run --lab "$$lab" examples/jobs/smoke.toml

.PHONY: clean
clean: ## remove build outputs (keeps downloaded .debs)
	rm -rf bin
