#!/usr/bin/env bash
# Boot the cgroup v2 lane guest (hack/v2vm/build-image.sh) once:
#   hack/v2vm/run.sh LANE_DIR OUT_DIR [CACHE_DIR]
# LANE_DIR is shared read-only as /lane (it must hold run.sh, run by the
# guest's crid-lane.service with /bin/sh), OUT_DIR read-write as /out. The
# disk is a snapshot: nothing the guest writes reaches the cached image. No
# network. Prints the guest's log and exits with run.sh's exit code; 124
# when the guest does not power off within V2VM_TIMEOUT seconds (2400).
set -euo pipefail

lane=$(realpath "${1:?usage: run.sh LANE_DIR OUT_DIR [CACHE_DIR]}")
out=$(realpath "${2:?usage: run.sh LANE_DIR OUT_DIR [CACHE_DIR]}")
cache=${3:-${CACHE_DIR:-$HOME/.cache/crid/v2vm}}
timeout=${V2VM_TIMEOUT:-2400}
[[ -f $lane/run.sh ]] || { echo "v2vm: $lane/run.sh missing" >&2; exit 2; }
for f in rootfs.img vmlinuz initrd.img; do
	[[ -s $cache/$f ]] || { echo "v2vm: $cache/$f missing: run hack/v2vm/build-image.sh first" >&2; exit 2; }
done
mkdir -p "$out"
rm -f "$out/rc" "$out/log" "$out/console.log"

# KVM only on real hardware virtualisation; kvm_pvm (nested, software)
# cannot run a stock Debian kernel, so TCG there and without /dev/kvm.
accel=(-accel tcg -cpu max)
if [[ -w /dev/kvm ]] && grep -qE '^kvm_(intel|amd) ' /proc/modules && ! grep -q '^kvm_pvm ' /proc/modules; then
	accel=(-accel kvm -cpu host)
fi

start=$SECONDS
set +e
timeout -k 10 "$timeout" qemu-system-x86_64 \
	-machine q35 "${accel[@]}" -smp 1 -m 2048 -nodefaults -no-reboot \
	-display none -monitor none -serial "file:$out/console.log" -nic none \
	-kernel "$cache/vmlinuz" -initrd "$cache/initrd.img" \
	-append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all mitigations=off fsck.mode=skip quiet panic=1" \
	-drive "file=$cache/rootfs.img,format=raw,if=virtio,snapshot=on" \
	-virtfs "local,path=$lane,mount_tag=lane,security_model=none,readonly=on" \
	-virtfs "local,path=$out,mount_tag=out,security_model=none"
qrc=$?
set -e
echo "v2vm: guest ran $((SECONDS - start)) s (qemu exit $qrc, ${accel[1]})"

[[ -f $out/log ]] && cat "$out/log"
if [[ ! -s $out/rc ]]; then
	echo "v2vm: the guest wrote no rc (timeout ${timeout}s or boot failure); console:" >&2
	tail -n 60 "$out/console.log" >&2 || true
	((qrc == 124)) && exit 124
	exit 1
fi
rc=$(<"$out/rc")
echo "v2vm: guest rc $rc"
exit "$rc"
