#!/usr/bin/env bash
# Build the cgroup v2 test lane's guest: a Debian bookworm rootfs with
# systemd, runc, crun and conmon as a sparse ext4 image, plus the kernel and
# a small initrd, in CACHE_DIR (default ~/.cache/crid/v2vm). Idempotent: does
# nothing when all three exist. Root only (debootstrap, chroot).
#
# The guest runs crid-lane.service once multi-user.target is up: it mounts the
# 9p shares "lane" (read-only input, /lane) and "out" (/out), runs
# /lane/run.sh > /out/log 2>&1, writes its exit code to /out/rc and powers off.
# See /work/shared/notes/cgroup-v2-vm-lane.md and hack/v2vm/run.sh.
set -euo pipefail

CACHE_DIR=${1:-${CACHE_DIR:-$HOME/.cache/crid/v2vm}}
SUITE=bookworm
IMG_SIZE=4G
PKGS=systemd,systemd-sysv,dbus,udev,kmod,iproute2,runc,crun,conmon,busybox-static,procps,linux-image-amd64,initramfs-tools

img=$CACHE_DIR/rootfs.img
if [[ -s $img && -s $CACHE_DIR/vmlinuz && -s $CACHE_DIR/initrd.img ]]; then
	echo "v2vm: image cached in $CACHE_DIR"
	exit 0
fi
[[ $(id -u) == 0 ]] || { echo "v2vm: build-image.sh must run as root" >&2; exit 1; }

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if ((${#need[@]})); then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The mirror the host uses for Debian (deb822 or one-line sources).
mirror=$(
	{
		awk '/^URIs:/ {print $2}' /etc/apt/sources.list.d/*.sources 2>/dev/null
		awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' \
			/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
	} | grep -E '/debian/?$' | head -n1 || true
)
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$CACHE_DIR"
work=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
root=$work/root
cleanup() {
	for m in "$root/dev/pts" "$root/dev" "$root/proc" "$root/sys"; do
		mountpoint -q "$m" 2>/dev/null && umount -l "$m"
	done
	rm -rf "$work"
}
trap cleanup EXIT

start=$SECONDS
echo "v2vm: debootstrap $SUITE from $mirror"
debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
	{ tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# A small initrd: only what finds and mounts /dev/vda (and 9p, for the shares).
cat >"$root/etc/initramfs-tools/conf.d/crid-v2vm" <<'CONF'
MODULES=list
COMPRESS=gzip
CONF
printf '%s\n' virtio_pci virtio_blk ext4 9p 9pnet 9pnet_virtio >"$root/etc/initramfs-tools/modules"
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
kver=$(basename "$(ls -d "$root"/lib/modules/* | sort -V | tail -n1)")
chroot "$root" update-initramfs -c -k "$kver" >/dev/null 2>&1 ||
	chroot "$root" update-initramfs -u -k "$kver" >/dev/null
umount "$root/dev" "$root/sys" "$root/proc"

echo crid-v2vm >"$root/etc/hostname"
printf '127.0.0.1 localhost crid-v2vm\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,relatime 0 1\n' >"$root/etc/fstab"
: >"$root/etc/machine-id" # systemd makes a fresh one at every (snapshot) boot
ln -sf /usr/share/zoneinfo/UTC "$root/etc/localtime"
# Nothing logs in; the console stays for kernel and unit messages.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$root/etc/systemd/system/getty@tty1.service"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily.timer"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily-upgrade.timer"

cat >"$root/usr/local/sbin/crid-lane" <<'LANE'
#!/bin/sh
# Run /lane/run.sh from the 9p share "lane", output and rc to share "out".
mkdir -p /lane /out
modprobe -a 9p 9pnet_virtio 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,ro lane /lane &&
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 out /out || {
	echo "crid-lane: cannot mount the 9p shares" >/dev/console
	systemctl poweroff --no-block
	exit 1
}
rc=0
/bin/sh /lane/run.sh >/out/log 2>&1 || rc=$?
echo "$rc" >/out/rc
sync
umount /out
echo "crid-lane: run.sh exited $rc" >/dev/console
systemctl poweroff --no-block
LANE
chmod 0755 "$root/usr/local/sbin/crid-lane"
cat >"$root/etc/systemd/system/crid-lane.service" <<'UNIT'
[Unit]
Description=crid cgroup v2 test lane
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/crid-lane
TimeoutStartSec=infinity
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/crid-lane.service "$root/etc/systemd/system/multi-user.target.wants/crid-lane.service"

cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/initrd.img"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*_Packages
truncate -s "$IMG_SIZE" "$work/rootfs.img"
mkfs.ext4 -q -F -L crid-v2vm -d "$root" "$work/rootfs.img"

# Publish all three together; the image last, as it is what marks "done".
mv "$work/vmlinuz" "$CACHE_DIR/vmlinuz"
mv "$work/initrd.img" "$CACHE_DIR/initrd.img"
mv "$work/rootfs.img" "$img"
echo "v2vm: built $img (kernel $kver, initrd $(du -h "$CACHE_DIR/initrd.img" | cut -f1), $((SECONDS - start)) s)"
