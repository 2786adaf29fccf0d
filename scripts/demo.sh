#!/usr/bin/env bash
# The demo: set up this machine, start hangard, build the tiny image if missing,
# launch a VM and show it running, its serial output and how to reach it.
# Idempotent: a second run replaces the demo VM and is quick.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
export PATH=$ROOT/.venv/bin:$PATH
LOG=${HANGARD_LOG:-/var/log/hangard.log}
VM=${DEMO_VM:-demo}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if ! hangar list >/dev/null 2>&1; then
    say "starting hangard (log: $LOG)"
    setsid nohup hangard >>"$LOG" 2>&1 </dev/null &
    for _ in $(seq 1 100); do
        hangar list >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

say "hangar host info"
hangar host info

say "hangar image build tiny   (Debian kernel + busybox, cached)"
hangar image build tiny

if hangar info "$VM" >/dev/null 2>&1; then
    say "removing the previous demo VM"
    hangar delete "$VM" --force
fi

# The first free host port from 8080 on, for the guest's web server.
PORT=$(python3 - <<'PY'
import socket
for port in range(8080, 8180):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
PY
)

say "hangar launch tiny $VM --forward $PORT:80 --wait   (returns once the guest has booted)"
start=$(date +%s%N)
hangar launch tiny "$VM" --forward "$PORT:80" --wait
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
printf 'launch -> boot marker: %d.%03d s\n' $((elapsed_ms / 1000)) $((elapsed_ms % 1000))

say "hangar list"
hangar list

say "hangar info $VM"
hangar info "$VM"

say "the guest's serial output (hangar logs $VM -n 15)"
hangar logs "$VM" -n 15

say "the guest's web page: curl http://127.0.0.1:$PORT/"
curl -fsS "http://127.0.0.1:$PORT/"

say "a command through the serial console"
printf '\nuname -a; ip -4 addr show eth0 | grep inet\n' | hangar console "$VM" | tail -n 4

cat <<EOT

The VM keeps running. Reach it with:
  hangar console $VM          interactive root shell (detach with Ctrl-])
  curl http://127.0.0.1:$PORT/   its web server
  hangar stop $VM | hangar start $VM | hangar delete $VM --force
EOT
