#!/usr/bin/env bash
# Zero-downtime binary upgrade of a running Parapet: the new process takes over the listening
# sockets (TCP and the QUIC UDP socket) from the old one, which finishes its in-flight requests
# and exits. No connection is refused in between.
#
#   deploy/upgrade.sh OLD_PID [CONFIG] [NEW_BINARY]
#
# Under systemd, the new process is started as a transient unit (systemd-run) so that it keeps
# running when the old unit's main process exits; `systemctl restart parapet` at a quiet moment
# folds it back into parapet.service.
set -euo pipefail
old_pid=${1:?usage: upgrade.sh OLD_PID [CONFIG] [NEW_BINARY]}
config=${2:-/etc/parapet/parapet.toml}
binary=${3:-/usr/local/bin/parapet}

"$binary" check -c "$config"

# 1. Start the new process in upgrade mode: it waits on [server] upgrade_socket for the sockets.
if [ -n "${INVOCATION_ID:-}" ] || systemctl is-active --quiet parapet 2>/dev/null; then
    systemd-run --unit "parapet-upgrade-$(date +%s)" --property=WorkingDirectory="$(dirname "$config")" \
        "$binary" run --upgrade -c "$config"
else
    nohup "$binary" run --upgrade -c "$config" >>"${PARAPET_LOG:-/tmp/parapet.log}" 2>&1 &
fi
sleep 1

# 2. Ask the old process to hand its sockets over and drain (SIGQUIT).
kill -QUIT "$old_pid"
echo "upgrade started: old process $old_pid drains and exits; the new one serves"
