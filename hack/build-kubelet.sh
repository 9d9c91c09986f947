#!/usr/bin/env bash
# Builds kubelet from the Go module proxy and caches the binary; prints its
# path on stdout (everything else goes to stderr).
#
# Usage: build-kubelet.sh [VERSION]     (default v1.37.2)
#   KUBELET_CACHE  directory for the binary (default ~/.cache/crid/kubelet-VERSION)
#
# The scratch module is hack/lib/kube-scratch.sh's (shared with build-kube.sh).
# Nothing is done when the cached binary exists and answers --version with
# VERSION. A lock on the cache directory makes concurrent calls wait for one
# build.
set -euo pipefail

version=${1:-v1.37.2}

cache=${KUBELET_CACHE:-$HOME/.cache/crid/kubelet-$version}
bin=$cache/kubelet

# shellcheck source=hack/lib/kube-scratch.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/kube-scratch.sh"

cached() {
	[[ -x $bin ]] && [[ "$("$bin" --version 2>/dev/null)" == "Kubernetes $version" ]]
}

if cached; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if cached; then # built by a concurrent call while this one waited
	echo "$bin"
	exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/build-kubelet.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

kube_scratch_module build-kubelet "$version" k8s.io/kubernetes/cmd/kubelet

echo "build-kubelet: building kubelet $version (several minutes on 2 cores)" >&2
start=$SECONDS
go build -trimpath -ldflags "$kube_ldflags" -o "$work/kubelet" k8s.io/kubernetes/cmd/kubelet >&2
mv "$work/kubelet" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "build-kubelet: built in $((SECONDS - start)) s" >&2

if ! cached; then
	echo "build-kubelet: $bin --version does not print Kubernetes $version: $("$bin" --version 2>&1 || true)" >&2
	exit 1
fi
echo "$bin"
