#!/usr/bin/env bash
# Runs BenchmarkPodNetwork (e2e/bench_network_test.go) and BenchmarkPodCycle
# (e2e/bench_runtime_test.go) against Debian's
# containerd with the same pod network crid's benchmark uses (bridge with
# masquerade and hairpin, host-local, portmap; Debian's plugins), for the
# back-to-back comparison issue 4 asks for. Images come from a local
# Distribution registry; nothing leaves the machine.
#
#   bash hack/bench-containerd.sh [benchtime]     (root)
#
# CONTAINERD_DIR=<dir holding containerd and containerd-shim-runc-v2> picks
# another build than Debian's 1.6.20, e.g. one made with
#   GOBIN=<dir> CGO_ENABLED=0 go install -tags 'no_btrfs no_devmapper no_zfs' \
#     github.com/containerd/containerd/v2/cmd/{containerd,containerd-shim-runc-v2}@v2.4.2
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
benchtime=${1:-3x}
port=5055
bridge=crid-ctrd0
subnet=10.215.0.0/24
tmp=$(mktemp -d /tmp/crid-bench-containerd-XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	# containerd leaves its shm and rootfs mounts behind when killed.
	grep -o " $tmp[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	ip link del "$bridge" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

if [ -n "${CONTAINERD_DIR:-}" ]; then
	export PATH=$CONTAINERD_DIR:$PATH
else
	command -v containerd >/dev/null || apt-get install -y containerd >/dev/null
fi

cat >"$tmp/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $tmp/registry}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
go run ./e2e/cmd/pushimages -registry "127.0.0.1:$port" -set basic,critest -mirror-config "$tmp/certs.d" >/dev/null

mkdir -p "$tmp/net.d"
cat >"$tmp/net.d/10-bench.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "bench", "plugins": [
  {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$tmp/ipam", "ranges": [[{"subnet": "$subnet"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
cat >"$tmp/containerd.toml" <<TOML
version = 2
root = "$tmp/root"
state = "$tmp/state"
[grpc]
  address = "$tmp/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  # root here lacks CAP_SYS_RESOURCE: the pause container's -998 would fail.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$tmp/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$tmp/certs.d"
TOML
containerd --config "$tmp/containerd.toml" >"$tmp/containerd.log" 2>&1 &
ctrd=$!
pids+=($ctrd)
for _ in $(seq 100); do [ -S "$tmp/containerd.sock" ] && break; sleep 0.1; done
crictl --runtime-endpoint "unix://$tmp/containerd.sock" --image-endpoint "unix://$tmp/containerd.sock" \
	pull registry.k8s.io/pause:3.9 >/dev/null

echo "containerd $(containerd --version | awk '{print $3}'), same network as crid's benchmark:"
BENCH_CRI_ENDPOINT="unix://$tmp/containerd.sock" BENCH_IMAGE="127.0.0.1:$port/crid-test/busybox:latest" \
	BENCH_RUNTIME_PID=$ctrd \
	go test -count=1 -tags e2e -run '^$' -bench 'PodNetwork|PodCycle' -benchtime "$benchtime" ./e2e/ | grep -E '^Benchmark|^ok|FAIL|Error|rror:' | head -20
