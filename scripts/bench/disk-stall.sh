#!/usr/bin/env bash
# A disk slow to sync, while airlock reads fast (issue 15, BENCHMARKS.md "The disk stall").
# Usage: scripts/bench/disk-stall.sh [AIRLOCK_BINARY] (default: target/release/airlock)
# Builds the bench's libmodbus server (libmodbus-dev), writes the bench's config (10,000 u16
# holding registers, a 1 ms poll, one request in flight) to a scratch folder on the file system
# of that folder, runs `airlock run` pinned to core 0 with the server on core 1, and 8 s in
# writes 3 GB with dd and calls sync: ext4 then holds every fdatasync (and writes that need
# the journal) until the 3 GB are on disk. Prints the device's batches_dropped, read from the
# gateway's API 8 s after sync returned, and the log lines that say a batch found no room.
# Bounded: the gateway stops by itself after 35 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(realpath "${1:-target/release/airlock}")
WORK=${AIRLOCK_STALL_DIR:-/tmp/airlock-disk-stall}
rm -rf "$WORK"; mkdir -p "$WORK"
cc -O2 -o "$WORK/modbus_server" crates/airlock/benches/c/modbus_server.c $(pkg-config --cflags --libs libmodbus)
python3 - "$WORK" <<'PY'
import sys
work = sys.argv[1]
text = (f'[gateway]\nname = "bench"\n\n[store]\ndata_dir = "{work}/data"\n\n[web]\nlisten = "127.0.0.1:18088"\n\n'
        '[[device]]\nname = "plc"\nasset_path = "bench/line"\nprotocol = "modbus_tcp"\naddress = "127.0.0.1:15502"\n'
        'poll_interval_ms = 1\ntimeout_ms = 2000\nrate_max_per_s = 100000\nrequests_in_flight_max = 1\n')
for i in range(10000):
    text += f'[[device.tag]]\nname = "r{i}"\nspace = "holding_register"\naddress = {i}\ntype = "u16"\n'
open(f'{work}/stall.toml', 'w').write(text)
PY
taskset -c 1 "$WORK/modbus_server" 15502 10000 > /dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -f "$WORK/big"' EXIT
sleep 0.5
RUST_LOG=info taskset -c 0 "$BIN" run "$WORK/stall.toml" --duration 35s > "$WORK/gateway.log" 2>&1 &
GATEWAY=$!
sleep 8
echo "dd from $(date +%T.%N | cut -c1-12)"
dd if=/dev/zero of="$WORK/big" bs=1M count=3000 2>/dev/null
echo "dd ended $(date +%T.%N | cut -c1-12)"
sync
echo "sync returned $(date +%T.%N | cut -c1-12)"
sleep 8
curl -s 127.0.0.1:18088/api/v1/overview | python3 -c 'import json, sys; o = json.load(sys.stdin); print("batches_dropped", o["devices"][0]["batches_dropped"], "samples_stored", o["store"]["samples_stored"])'
wait $GATEWAY || true
echo "log lines 'no room': $(grep -c 'no room' "$WORK/gateway.log" || true)"
