#!/usr/bin/env bash
# Installs what crid and its tests need on a fresh Debian 12 machine.
# Idempotent and quick when everything is present already.
set -euo pipefail

export PATH=$PATH:/usr/local/go/bin:/usr/local/sbin:/usr/sbin:/sbin
APT_PACKAGES=(
  runc                         # default OCI runtime
  conmon                       # the per-container monitor
  musl-tools                   # builds the 13 KiB static crid-pause
  containernetworking-plugins  # bridge, host-local, portmap, loopback
  iptables
  iproute2 util-linux          # ip, nsenter, unshare, ipcmk, flock: the tests' tools
  docker-registry              # the Distribution server, for tests
  busybox-static               # test images are built from it
  isal                         # igzip: inflates gzip layers ~4x faster than Go
  ca-certificates
)
CRICTL_VERSION=v1.37.0

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's docker-registry package starts a registry on :5000 through its
# init script; the tests start their own on free loopback ports instead.
if command -v service >/dev/null && [[ -x /etc/init.d/docker-registry ]]; then
  service docker-registry stop >/dev/null 2>&1 || true
fi

# The critest images are built from Debian's dynamically linked busybox,
# which imagebuild fetches with apt-get download (it conflicts with
# busybox-static, so it is never installed): that needs the package lists.
if ! apt-cache show busybox >/dev/null 2>&1; then
  apt-get update -qq
fi

if ! command -v go >/dev/null; then
  echo "install-deps: Go is required (expected at /usr/local/go/bin)" >&2
  exit 1
fi

# A go-installed crictl prints "version unknown": ask the binary's build info.
if ! [[ -x /usr/local/bin/crictl ]] || ! go version -m /usr/local/bin/crictl 2>/dev/null |
  grep -qE "^[[:space:]]+mod[[:space:]]+sigs.k8s.io/cri-tools[[:space:]]+${CRICTL_VERSION}[[:space:]]"; then
  echo "install-deps: go install crictl ${CRICTL_VERSION}"
  GOBIN=/usr/local/bin go install "sigs.k8s.io/cri-tools/cmd/crictl@${CRICTL_VERSION}"
fi
