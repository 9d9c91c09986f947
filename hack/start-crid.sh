#!/usr/bin/env bash
# Starts the installed crid: through systemd where systemd is PID 1, otherwise
# as a background process logging to /var/log/crid.log. Waits until the CRI
# socket answers.
set -euo pipefail

SOCK=${CRID_SOCKET:-/run/crid/crid.sock}
if [[ "$(cat /proc/1/comm 2>/dev/null)" == systemd ]]; then
  systemctl daemon-reload
  systemctl enable crid.service >/dev/null 2>&1
  systemctl restart crid.service
else
  if pid=$(pgrep -x crid); then
    echo "start-crid: stopping running crid (pid $pid)"
    kill -TERM $pid
    for _ in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  fi
  nohup /usr/local/bin/crid --config /etc/crid/config.toml >>/var/log/crid.log 2>&1 &
  echo "start-crid: crid started as pid $! (log: /var/log/crid.log)"
fi
for _ in $(seq 100); do
  if /usr/local/bin/crictl --runtime-endpoint "unix://$SOCK" version >/dev/null 2>&1; then
    /usr/local/bin/crictl --runtime-endpoint "unix://$SOCK" version
    exit 0
  fi
  sleep 0.1
done
echo "start-crid: crid did not answer on $SOCK; see /var/log/crid.log or journalctl -u crid" >&2
exit 1
