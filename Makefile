# jnrelay — build, demo, test, lint.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
GOFLAGS_BUILD := -trimpath -ldflags '$(LDFLAGS)'
STATICCHECK_VERSION := v0.7.0
FUZZTIME  ?= 10s

.PHONY: build cross image demo test test-loaded test-unit test-e2e test-cross image-arm64 test-image test-appliance fuzz bench bench-image bench-directory lint deps clean

## build: static relayd binary in bin/relayd
build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o bin/relayd ./relayd

## cross: static relayd for arm v6/v7, arm64, mipsle, mips, amd64 in bin/cross, size report in docs/size.md
cross:
	bash image/cross.sh $(VERSION) bin/cross docs/size.md

## image: Debian packages, OpenWrt packages and rootfs overlays from the cross binaries, in dist/ (docs/install.md)
image: cross
	bash image/package.sh -b bin/cross -o dist

## deps: install the system packages tests and the demo use (Debian, idempotent)
deps:
	bash tests/deps.sh

## demo: a real call through relayd registered with a private Prosody
demo: deps build
	$(GO) build -o bin/demo ./tests/demo
	bin/demo -relayd bin/relayd

## test: unit tests, fuzz smoke, end-to-end suites (needs root for netns)
test: deps build test-unit fuzz test-e2e

## test-loaded: make test's suites while two busy loops compete for the cores (tests/loaded.sh)
test-loaded: deps build
	bash tests/loaded.sh $(MAKE) test-unit fuzz test-e2e

test-unit:
	$(GO) test -race -count=1 ./relayd/... ./kernel/... ./config/... ./provision/... ./internal/...

## fuzz: run every fuzz target briefly (FUZZTIME each)
fuzz:
	bash tests/fuzz.sh FuzzHandleIQ ./relayd/jinglenodes $(FUZZTIME)
	bash tests/fuzz.sh FuzzParse ./config $(FUZZTIME)
	bash tests/fuzz.sh FuzzHandle ./relayd/stun $(FUZZTIME)
	bash tests/fuzz.sh FuzzPatch ./provision $(FUZZTIME)
	bash tests/fuzz.sh FuzzStanzaScanner ./relayd/xmppsession $(FUZZTIME)
	bash tests/fuzz.sh FuzzClass ./internal/netclass $(FUZZTIME)
	bash tests/fuzz.sh FuzzUnauthenticated ./relayd/turn $(FUZZTIME)
	bash tests/fuzz.sh FuzzParseUsername ./relayd/turn $(FUZZTIME)
	bash tests/fuzz.sh FuzzDecodeRequest ./kernel/offload $(FUZZTIME)
	bash tests/fuzz.sh FuzzItems ./relayd/directory $(FUZZTIME)
	bash tests/fuzz.sh FuzzParsePCPMapResponse ./relayd/portmap $(FUZZTIME)

test-e2e: build
	RELAYD_BIN=$(CURDIR)/bin/relayd $(GO) test -count=1 -timeout 15m ./tests/...

## test-cross: kernel and daemon unit tests as linux/arm v7 and arm64 binaries under qemu-user
test-cross:
	bash image/arm64/deps.sh
	bash tests/qemu-user.sh

## test-appliance: the amd64 .deb installed in a Debian rootfs booted by systemd-nspawn (tests/appliance)
test-appliance: build
	bash tests/appliance/deps.sh
	rm -rf bin/appliance && mkdir -p bin/appliance
	cp bin/relayd bin/appliance/relayd-linux-amd64
	bash image/package.sh -b bin/appliance -o bin/appliance/dist amd64
	JNRELAY_REQUIRE_APPLIANCE=1 JNRELAY_DEB="$$(ls $(CURDIR)/bin/appliance/dist/jnrelay_*_amd64.deb)" $(GO) test -count=1 -v -timeout 10m ./tests/appliance

## image-arm64: bootable arm64 test image (Debian's kernel, initramfs with relayd) in bin/image-arm64
image-arm64:
	bash image/arm64/deps.sh
	bash image/arm64/build.sh $(VERSION) bin/image-arm64

## test-image: test-cross, make cross within the size budgets, then boot the arm64 image in qemu-system-aarch64 and test relayd on it (docs/image.md)
test-image: deps test-cross image-arm64 cross
	$(GO) test -count=1 ./image/arm64/...
	JNRELAY_REQUIRE_IMAGE=1 JNRELAY_CROSS_DIR=$(CURDIR)/bin/cross $(GO) test -count=1 -v -run 'CheckConfig|Cross' ./tests/size
	JNRELAY_REQUIRE_IMAGE=1 JNRELAY_IMAGE_DIR=$(CURDIR)/bin/image-arm64 $(GO) test -count=1 -v -timeout 10m ./tests/image

## bench: micro benchmarks, the request and spoofed-packet floods held to their targets, then the side-by-side run (relayd, C reference, rtpengine, coturn, relayd's TURN server; 30-60 min, root)
bench: build
	$(GO) test -run '^$$' -bench . -skip '^BenchmarkConntrackDump$$' -benchtime 20000x ./relayd/... ./kernel/...
	$(GO) test -run '^$$' -bench '^BenchmarkConntrackDump$$' -benchtime 200x ./kernel/nft/
	RELAYD_BIN=$(CURDIR)/bin/relayd $(GO) test -count=1 -v -run '^(TestChannelRequestFlood|TestSpoofedFloodAtLatchedCall)$$' ./tests/chaos -args -chaos.targets
	bash tests/bench/deps.sh
	$(GO) test -count=1 -v -timeout 120m -run '^TestBench$$' ./tests/bench -args -bench.full -bench.out $(CURDIR)/bench-results.md

## bench-image: guest CPU per relayed packet in the arm64 image under qemu (TCG): userspace, nftables, flowtable and eBPF side by side (≈ 3 min; table in bench-image.md, docs/performance.md)
bench-image: image-arm64
	JNRELAY_REQUIRE_IMAGE=1 JNRELAY_IMAGE_DIR=$(CURDIR)/bin/image-arm64 $(GO) test -count=1 -v -timeout 20m -run '^TestArm64ImageFastPathCPU$$' ./tests/image -args -image.bench -image.bench.out $(CURDIR)/bench-image.md

## bench-directory: relay directories at scale, DIRSCALE_N simulated relays on two mirrored Prosody, then ejabberd, servers read by a relayd tracker (docs/directory.md; about 10 min at 2000, root)
DIRSCALE_N       ?= 2000
DIRSCALE_SERVERS ?= prosody,ejabberd
DIRSCALE_FLAGS   ?= -dirscale.fresh 100 -dirscale.updates 500 -dirscale.subscribers 20 -dirscale.lookups 200 -dirscale.prosody-storage memory
bench-directory: deps build
	RELAYD_BIN=$(CURDIR)/bin/relayd $(GO) test -count=1 -v -timeout 60m -run '^TestDirectoryScale$$' ./tests/dirscale \
		-args -dirscale.n $(DIRSCALE_N) -dirscale.servers $(DIRSCALE_SERVERS) $(DIRSCALE_FLAGS) -dirscale.out $(CURDIR)/dirscale-results.md

lint:
	test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

clean:
	rm -rf bin
