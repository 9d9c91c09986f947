#!/usr/bin/env bash
# Builds the control plane of the e2e one-node cluster from the Go module
# proxy and caches the binaries; prints the two cache directories on stdout
# (the kube one, then the etcd one; everything else goes to stderr).
#
# Usage: build-kube.sh [KUBE_VERSION [ETCD_VERSION]]   (default v1.37.2 v3.7.3)
#   KUBE_CACHE  kube-apiserver, kube-controller-manager, kube-scheduler and
#               kubectl (default ~/.cache/crid/kube-KUBE_VERSION)
#   ETCD_CACHE  etcd (default ~/.cache/crid/etcd-ETCD_VERSION)
#
# The kube commands come from one scratch module (hack/lib/kube-scratch.sh,
# shared with build-kubelet.sh) and one `go build -o DIR/` so that shared
# packages compile once; Go's build cache already holds what the kubelet
# build compiled. etcd's main package is go.etcd.io/etcd/server/v3 (its
# main.go calls etcdmain.Main); that module replaces its sibling modules with
# relative paths, so it is built from a scratch module of its own too.
# Nothing is done when every cached binary answers with its version. A lock
# on each cache directory makes concurrent calls wait for one build.
set -euo pipefail

version=${1:-v1.37.2}
etcd_version=${2:-v3.7.3}
[[ $etcd_version =~ ^v3\.[0-9]+\.[0-9]+$ ]] || { echo "build-kube: bad etcd version $etcd_version" >&2; exit 2; }

kube_cache=${KUBE_CACHE:-$HOME/.cache/crid/kube-$version}
etcd_cache=${ETCD_CACHE:-$HOME/.cache/crid/etcd-$etcd_version}
cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

# shellcheck source=hack/lib/kube-scratch.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/kube-scratch.sh"

kube_cached() {
	local c
	for c in kube-apiserver kube-controller-manager kube-scheduler; do
		[[ -x $kube_cache/$c ]] && [[ "$("$kube_cache/$c" --version 2>/dev/null)" == "Kubernetes $version" ]] || return 1
	done
	[[ -x $kube_cache/kubectl ]] && [[ "$("$kube_cache/kubectl" version --client 2>/dev/null | head -n1)" == "Client Version: $version" ]]
}

etcd_cached() {
	[[ -x $etcd_cache/etcd ]] && [[ "$("$etcd_cache/etcd" --version 2>/dev/null | head -n1)" == "etcd Version: ${etcd_version#v}" ]]
}

work=$(mktemp -d "${TMPDIR:-/tmp}/build-kube.XXXXXX")
trap 'rm -rf "$work"' EXIT

build_kube() {
	mkdir -p "$kube_cache"
	exec 8>"$kube_cache/.lock"
	flock 8
	if kube_cached; then # built by a concurrent call while this one waited
		return 0
	fi
	mkdir -p "$work/kube/out"
	cd "$work/kube"
	local pkgs=() c
	for c in "${cmds[@]}"; do
		pkgs+=("k8s.io/kubernetes/cmd/$c")
	done
	kube_scratch_module build-kube "$version" "${pkgs[@]}"
	echo "build-kube: building ${cmds[*]} $version (several minutes on 2 cores)" >&2
	local start=$SECONDS
	go build -trimpath -ldflags "$kube_ldflags" -o "$work/kube/out/" "${pkgs[@]}" >&2
	for c in "${cmds[@]}"; do
		mv "$work/kube/out/$c" "$kube_cache/$c.tmp"
		mv "$kube_cache/$c.tmp" "$kube_cache/$c"
	done
	echo "build-kube: kube commands built in $((SECONDS - start)) s" >&2
	exec 8>&-
	kube_cached || { echo "build-kube: binaries in $kube_cache do not report $version" >&2; return 1; }
}

build_etcd() {
	mkdir -p "$etcd_cache"
	exec 8>"$etcd_cache/.lock"
	flock 8
	if etcd_cached; then
		return 0
	fi
	mkdir -p "$work/etcd"
	cd "$work/etcd"
	echo "build-kube: fetching go.etcd.io/etcd/server/v3@$etcd_version" >&2
	printf 'module crid.local/build-etcd\n\ngo 1.26\n' >go.mod
	go get "go.etcd.io/etcd/server/v3@$etcd_version" >&2
	local start=$SECONDS
	go build -trimpath -ldflags "-s -w" -o "$work/etcd/etcd" go.etcd.io/etcd/server/v3 >&2
	mv "$work/etcd/etcd" "$etcd_cache/etcd.tmp"
	mv "$etcd_cache/etcd.tmp" "$etcd_cache/etcd"
	echo "build-kube: etcd built in $((SECONDS - start)) s" >&2
	exec 8>&-
	etcd_cached || { echo "build-kube: $etcd_cache/etcd does not report $etcd_version: $("$etcd_cache/etcd" --version 2>&1 | head -n1)" >&2; return 1; }
}

kube_cached || build_kube
etcd_cached || build_etcd
echo "$kube_cache"
echo "$etcd_cache"
