# crid: build, install, run and test.
#   make up     install dependencies, build, install and start crid (root)
#   make test   every test: unit, root integration and e2e (root)
#   make critest  critest conformance against crid, images from a local registry (root)
#   make bench  benchmarks with the figures the issues name (root)

SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:/usr/local/sbin:/usr/sbin:/sbin
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
PREFIX ?= /usr/local
GOTEST_FLAGS ?= -count=1 -timeout 30m

.PHONY: all build deps install start up test unit e2e critest bench lint clean

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
	install -D -m 0644 deploy/crid.service /etc/systemd/system/crid.service

start:
	bash hack/start-crid.sh

# The first command on a fresh machine.
up: deps install start

# The second: every test, as root. .ci/run calls exactly this.
test: deps lint
	$(GO) test $(GOTEST_FLAGS) ./...
	$(GO) test $(GOTEST_FLAGS) -tags e2e ./e2e/...
	$(MAKE) --no-print-directory critest

# Specs that fail must be listed in e2e/critest-expected-failures.txt.
critest:
	$(GO) run ./e2e/cmd/critest-run

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 5x ./imagestore/ ./snapshotter/...
	$(GO) test -count=1 -tags e2e -run 'TestBenchPull' -v ./e2e/...

clean:
	rm -rf bin
