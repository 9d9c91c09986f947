# Sourced by hack/build-kubelet.sh and hack/build-kube.sh: the scratch module
# that builds k8s.io/kubernetes commands from the Go module proxy.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces each staging
# module (k8s.io/api, k8s.io/client-go, ...) with ./staging/src/k8s.io/...,
# and replace directives of a dependency are ignored. So a scratch module
# requires k8s.io/kubernetes VERSION and replaces every staging module named
# in that go.mod with its published twin, k8s.io/<name> v0.<minor>.<patch>.

export PATH=$PATH:/usr/local/go/bin
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0
# The toolchain in use builds it; never fetch another.
export GOTOOLCHAIN=local

# kube_scratch_module NAME VERSION PKG...: writes go.mod in the current
# directory for k8s.io/kubernetes VERSION, fetches the packages PKG... and
# sets kube_ldflags to the version stamps kube's hack/lib/version.sh sets
# (in both packages that carry them, or the binaries report v0.0.0).
kube_scratch_module() {
	local name=$1 version=$2
	shift 2
	[[ $version =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { echo "$name: bad version $version" >&2; return 2; }
	local minor=${BASH_REMATCH[1]} patch=${BASH_REMATCH[2]}
	local staging_version=v0.$minor.$patch

	echo "$name: fetching k8s.io/kubernetes@$version" >&2
	local gomod
	gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
	[[ -f $gomod ]] || { echo "$name: no go.mod for k8s.io/kubernetes@$version" >&2; return 1; }

	# Staging modules: "k8s.io/api => ./staging/src/k8s.io/api", inside a
	# replace block or on a replace line of their own.
	local staging
	mapfile -t staging < <(sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/src/.*#\2#p' "$gomod" | sort -u)
	if ((${#staging[@]} == 0)); then
		echo "$name: no staging modules found in $gomod" >&2
		return 1
	fi
	echo "$name: replacing ${#staging[@]} staging modules with $staging_version" >&2

	{
		echo "module crid.local/$name"
		echo
		echo "go $(sed -n 's/^go[[:space:]]\{1,\}\([0-9.]*\).*/\1/p' "$gomod")"
		echo
		echo "require k8s.io/kubernetes $version"
		echo
		echo "replace ("
		local m
		for m in "${staging[@]}"; do
			echo "	$m => $m $staging_version"
		done
		echo ")"
	} >go.mod

	local pkg args=()
	for pkg in "$@"; do
		args+=("$pkg@$version")
	done
	go get "${args[@]}" >&2

	kube_ldflags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		kube_ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
}
