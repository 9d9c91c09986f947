#!/usr/bin/env bash
# Builds kubelet from the Go module proxy and caches the binary; prints its
# path on stdout (everything else goes to stderr).
#
# Usage: build-kubelet.sh [VERSION]     (default v1.37.2)
#   KUBELET_CACHE  directory for the binary (default ~/.cache/crid/kubelet-VERSION)
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces each staging
# module (k8s.io/api, k8s.io/client-go, ...) with ./staging/src/k8s.io/...,
# and replace directives of a dependency are ignored. So a scratch module
# requires k8s.io/kubernetes VERSION and replaces every staging module named
# in that go.mod with its published twin, k8s.io/<name> v0.<minor>.<patch>.
# Nothing is done when the cached binary exists and answers --version with
# VERSION. A lock on the cache directory makes concurrent calls wait for one
# build.
set -euo pipefail

version=${1:-v1.37.2}
[[ $version =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { echo "build-kubelet: bad version $version" >&2; exit 2; }
minor=${BASH_REMATCH[1]}
patch=${BASH_REMATCH[2]}
staging_version=v0.$minor.$patch

cache=${KUBELET_CACHE:-$HOME/.cache/crid/kubelet-$version}
bin=$cache/kubelet

export PATH=$PATH:/usr/local/go/bin
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0
# The toolchain in use builds it; never fetch another.
export GOTOOLCHAIN=local

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

echo "build-kubelet: fetching k8s.io/kubernetes@$version" >&2
gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[[ -f $gomod ]] || { echo "build-kubelet: no go.mod for k8s.io/kubernetes@$version" >&2; exit 1; }

# Staging modules: "k8s.io/api => ./staging/src/k8s.io/api", inside a
# replace block or on a replace line of their own.
mapfile -t staging < <(sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/src/.*#\2#p' "$gomod" | sort -u)
if ((${#staging[@]} == 0)); then
	echo "build-kubelet: no staging modules found in $gomod" >&2
	exit 1
fi
echo "build-kubelet: replacing ${#staging[@]} staging modules with $staging_version" >&2

{
	echo "module crid.local/build-kubelet"
	echo
	echo "go $(sed -n 's/^go[[:space:]]\{1,\}\([0-9.]*\).*/\1/p' "$gomod")"
	echo
	echo "require k8s.io/kubernetes $version"
	echo
	echo "replace ("
	for m in "${staging[@]}"; do
		echo "	$m => $m $staging_version"
	done
	echo ")"
} >go.mod

go get "k8s.io/kubernetes/cmd/kubelet@$version" >&2

# Version info as kube's hack/lib/version.sh sets it, in both packages that
# carry it, or kubelet reports v0.0.0.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

echo "build-kubelet: building kubelet $version (several minutes on 2 cores)" >&2
start=$SECONDS
go build -trimpath -ldflags "$ldflags" -o "$work/kubelet" k8s.io/kubernetes/cmd/kubelet >&2
mv "$work/kubelet" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "build-kubelet: built in $((SECONDS - start)) s" >&2

if ! cached; then
	echo "build-kubelet: $bin --version does not print Kubernetes $version: $("$bin" --version 2>&1 || true)" >&2
	exit 1
fi
echo "$bin"
