#!/bin/sh
# Runs inside the cgroup v2 guest as /lane/run.sh (make test-v2vm copies it
# there with the test binaries). 9p cannot hold overlay upper dirs or be
# trusted for mounts, so everything is copied to the guest's disk first.
# Prints a summary: one line per suite with its PASS/FAIL counts.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
work=/var/tmp/lane
mkdir -p "$work/tmp"
cp /lane/*.test "$work/"
export TMPDIR="$work/tmp"
cd "$work" || exit 1
echo "== guest: kernel $(uname -r), /sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup)," \
	"controllers: $(cat /sys/fs/cgroup/cgroup.controllers), pid 1: $(cat /proc/1/comm)"
echo "== runc $(runc --version | head -n1 | awk '{print $3}'), crun $(crun --version | head -n1 | awk '{print $3}'), $(conmon --version | head -n1)"

rc=0
summary=
# Extra go test flags (make test-v2vm V2VM_TEST_FLAGS=...), e.g. -test.run.
flags=$(cat /lane/test-flags 2>/dev/null || true)
[ -n "$flags" ] && echo "== test flags: $flags"
# suite NAME CMD...: runs one test binary, its -v output to the log.
suite() {
	name=$1
	shift
	echo "== RUN $name"
	t0=$(date +%s)
	# Streamed into /out/log as it runs: a guest killed by the timeout
	# still leaves the log of what ran.
	{
		"$@" -test.count=1 -test.v -test.timeout=30m $flags 2>&1
		echo $? >"$work/$name.rc"
	} | tee "$work/$name.out"
	r=$(cat "$work/$name.rc")
	pass=$(grep -c -- '^--- PASS' "$work/$name.out")
	fail=$(grep -c -- '^--- FAIL' "$work/$name.out")
	verdict=ok
	if [ "$r" -ne 0 ]; then
		verdict="FAIL(exit $r)"
		rc=1
	fi
	summary="$summary== SUMMARY $name: $verdict, $pass passed, $fail failed, $(($(date +%s) - t0)) s
"
}
suite cgroupmgr ./cgroupmgr.test
suite container-runc env CRID_TEST_OCI_RUNTIME=/usr/sbin/runc ./container.test
suite container-crun env CRID_TEST_OCI_RUNTIME=/usr/bin/crun ./container.test
printf '%s' "$summary"
echo "== lane rc $rc"
exit "$rc"
