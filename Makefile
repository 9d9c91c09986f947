# crid: build, install, run and test.
#   make up     install dependencies, build, install and start crid (root)
#   make test   every test: unit, root integration and e2e (root)
#   make critest  critest conformance against crid, images from a local registry (root)
#   make bench  benchmarks with the figures the issues name (root)
#   make test-v2vm  cgroup v2 + systemd driver tests in a QEMU guest (root; not in `make test`)
#   make kubelet  build kubelet v1.37.2 from the module proxy into ~/.cache/crid (the e2e kubelet test's)
#   make kube     build etcd v3.7.3, kube-apiserver, -controller-manager, -scheduler and kubectl v1.37.2
#                 into ~/.cache/crid (the e2e one-node cluster's)

SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:/usr/local/sbin:/usr/sbin:/sbin
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
PREFIX ?= /usr/local
GOTEST_FLAGS ?= -count=1 -timeout 30m

.PHONY: all build deps install start up test unit e2e critest bench lint clean test-v2vm kubelet kube

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/crid ./cmd/crid
	bash hack/build-pause.sh bin/crid-pause

deps:
	bash hack/install-deps.sh

install: build
	install -D -m 0755 bin/crid $(PREFIX)/bin/crid
	install -D -m 0755 bin/crid-pause $(PREFIX)/libexec/crid/crid-pause
	install -d -m 0755 /etc/crid /etc/crid/config.d /etc/crid/certs.d
	[ -f /etc/crid/config.toml ] || install -m 0644 deploy/config.toml /etc/crid/config.toml
	[ -f /etc/crictl.yaml ] || install -m 0644 deploy/crictl.yaml /etc/crictl.yaml
	@# The default pod network, only where the operator has none yet.
	install -d -m 0755 /etc/cni/net.d /opt/cni/bin
	if [ -z "$$(ls -A /etc/cni/net.d)" ]; then install -m 0644 deploy/cni/10-crid-bridge.conflist /etc/cni/net.d/; fi
	install -D -m 0644 deploy/crid.service /etc/systemd/system/crid.service

start:
	bash hack/start-crid.sh

# The first command on a fresh machine.
up: deps install start

# The second: every test, as root. .ci/run calls exactly this.
test: deps lint kubelet kube
	$(GO) test $(GOTEST_FLAGS) ./...
	$(GO) test $(GOTEST_FLAGS) -tags e2e ./e2e/...
	$(MAKE) --no-print-directory critest

# kubelet for e2e/kubelet_test.go, cached in ~/.cache/crid/kubelet-<version>;
# a no-op when the cached binary answers --version.
kubelet:
	bash hack/build-kubelet.sh

# The control plane and kubectl for e2e/cluster_test.go, cached in
# ~/.cache/crid/kube-<version> and ~/.cache/crid/etcd-<version>; a no-op
# when every cached binary answers with its version.
kube:
	bash hack/build-kube.sh

# Specs that fail must be listed in e2e/critest-expected-failures.txt.
critest:
	$(GO) run ./e2e/cmd/critest-run

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 5x ./imagestore/ ./snapshotter/...
	$(GO) test -count=1 -tags e2e -run '^$$' -bench 'ColdPull|PodCycle|PodMemory|PodNetwork' -benchtime 3x ./e2e/

# The cgroup v2 lane: this host is cgroup v1 without systemd as PID 1, so
# the v2 and systemd-driver tests run in a throw-away Debian guest under
# QEMU (hack/v2vm/). The guest image is cached in V2VM_CACHE.
V2VM_CACHE ?= $(HOME)/.cache/crid/v2vm
V2VM_DIR := bin/v2vm
# Flags for the test binaries in the guest. The streaming tests are left to
# the host lane: they need nothing of cgroup v2, and under TCG they take
# longer than the rest together.
V2VM_TEST_FLAGS ?= -test.skip=TestExecStream|TestAttach
test-v2vm:
	bash hack/v2vm/build-image.sh $(V2VM_CACHE)
	rm -rf $(V2VM_DIR) && mkdir -p $(V2VM_DIR)/lane $(V2VM_DIR)/out
	CGO_ENABLED=0 $(GO) test -c -trimpath -o $(V2VM_DIR)/lane/cgroupmgr.test ./cgroupmgr/
	CGO_ENABLED=0 $(GO) test -c -trimpath -tags v2vm -o $(V2VM_DIR)/lane/container.test ./container/
	@for b in $(V2VM_DIR)/lane/*.test; do \
		if readelf -l $$b | grep -q INTERP; then echo "$$b is not static"; exit 1; fi; done
	install -m 0755 hack/v2vm/lane.sh $(V2VM_DIR)/lane/run.sh
	echo '$(V2VM_TEST_FLAGS)' > $(V2VM_DIR)/lane/test-flags
	bash hack/v2vm/run.sh $(V2VM_DIR)/lane $(V2VM_DIR)/out $(V2VM_CACHE)

clean:
	rm -rf bin
