#!/usr/bin/env python3
"""A/B of airlock builds on the whole path, by hand (issue 15's figures marked "A/B by hand").

    scripts/ab-wholepath.py ROUNDS SECONDS VARIANT...

The libmodbus C server of the wholepath bench (`crates/airlock/benches/c/modbus_server.c`,
built here with cc against libmodbus-dev) serves 10,000 holding registers pinned to core 1.
Each VARIANT is then run in turn, ROUNDS times, alternating (so that a machine that drifts
drifts for all of them): `airlock run` pinned to core 0, 10,000 u16 tags at a 1 ms poll,
every sample stored. After 3 s of warm-up it measures SECONDS and prints registers per
CPU-second (the figure goal 1 compares), registers per second, the CPU of each thread, the
context switches per second of each thread (voluntary and not), dropped polls and the RSS.

A VARIANT is a path to an airlock binary, optionally with environment variables before a `|`
(joined by `+`) and scheduling changes after an `@` (`THREAD:chrt arguments`, joined by `;`):

    target/release/airlock
    "AIRLOCK_LOG=debug|/tmp/airlock.old"
    "/tmp/airlock.new@tokio-rt-worker:-b -p 0"

`AB_IN_FLIGHT=N` sets the device's `requests_in_flight_max` (1 if unset), `AB_POLL_MS=N` its
`poll_interval_ms` (1 if unset).

Every run is bounded (SECONDS, plus 30 s of grace given to `--duration`). Needs taskset, cc
and libmodbus-dev; the ports 15020 and 18080 on 127.0.0.1 must be free.
"""

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

REGISTERS = 10_000
PORT, WEB = 15020, 18080
TICK = os.sysconf("SC_CLK_TCK")


def per_thread(pid, read):
    out = collections.Counter()
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{t}/comm").read().strip()
            for key, value in read(f"/proc/{pid}/task/{t}"):
                out[f"{name}{key}"] += value
        except OSError:
            pass  # a thread that ended meanwhile
    return out


def cpu_of(task):
    fields = open(f"{task}/stat").read().rsplit(")", 1)[1].split()
    yield "", (int(fields[11]) + int(fields[12])) / TICK


def switches_of(task):
    for line in open(f"{task}/status"):
        if line.startswith("nonvoluntary_ctxt_switches"):
            yield ":inv", int(line.split()[1])
        elif line.startswith("voluntary_ctxt_switches"):
            yield ":vol", int(line.split()[1])


def overview():
    with urllib.request.urlopen(f"http://127.0.0.1:{WEB}/api/v1/overview", timeout=5) as r:
        device = json.load(r)["devices"][0]
    return device["samples"], device.get("batches_dropped")


def rss_mb(pid):
    """The RSS now, its peak, and now's split: anonymous memory (heap, stacks) and file pages
    (the binary's code and data that were touched)."""
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(rest.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0), fields.get("RssAnon", 0.0), fields.get("RssFile", 0.0)


def config(data):
    text = (
        f'[gateway]\nname = "ab"\n\n[store]\ndata_dir = "{data}"\n\n[web]\nlisten = "127.0.0.1:{WEB}"\n\n'
        f'[[device]]\nname = "plc"\nasset_path = "ab/line"\nprotocol = "modbus_tcp"\n'
        f'address = "127.0.0.1:{PORT}"\npoll_interval_ms = {os.environ.get("AB_POLL_MS", "1")}\ntimeout_ms = 2000\nrate_max_per_s = 100000\n'
        f'requests_in_flight_max = {os.environ.get("AB_IN_FLIGHT", "1")}\n'
    )
    for i in range(REGISTERS):
        text += f'[[device.tag]]\nname = "r{i}"\nspace = "holding_register"\naddress = {i}\ntype = "u16"\n'
    return text


def one_run(variant, seconds, work):
    env_text, _, rest = variant.rpartition("|")
    exe, _, schedule = rest.partition("@")
    env = dict(os.environ)
    for pair in filter(None, env_text.split("+")):
        key, _, value = pair.partition("=")
        env[key] = value
    data = os.path.join(work, "data")
    shutil.rmtree(data, ignore_errors=True)
    gateway = subprocess.Popen(
        ["taskset", "-c", "0", exe, "run", os.path.join(work, "ab.toml"), "--duration", f"{int(seconds) + 30}s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        for _ in range(300):
            try:
                overview()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(1)
        for spec in filter(None, schedule.split(";")):
            thread, _, args = spec.partition(":")
            for t in os.listdir(f"/proc/{gateway.pid}/task"):
                if open(f"/proc/{gateway.pid}/task/{t}/comm").read().strip() == thread:
                    subprocess.run(["chrt", *args.split(), t], check=True)
        time.sleep(2)
        sw0, cpu0 = per_thread(gateway.pid, switches_of), per_thread(gateway.pid, cpu_of)
        (s0, _), total0, t0 = overview(), next(cpu_of(f"/proc/{gateway.pid}"))[1], time.time()
        time.sleep(seconds)
        (s1, dropped), total1, t1 = overview(), next(cpu_of(f"/proc/{gateway.pid}"))[1], time.time()
        sw1, cpu1 = per_thread(gateway.pid, switches_of), per_thread(gateway.pid, cpu_of)
        now, peak, anon, file = rss_mb(gateway.pid)
    finally:
        gateway.send_signal(2)
        try:
            gateway.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()
    span = t1 - t0
    cores = (total1 - total0) / span
    per_cpu = (s1 - s0) / span / cores / 1e6
    threads = {k: round((v - cpu0.get(k, 0)) / span, 3) for k, v in cpu1.items() if v - cpu0.get(k, 0) > 0.005}
    sw = {k: round((v - sw0.get(k, 0)) / span) for k, v in sw1.items() if v - sw0.get(k, 0) > 0}
    print(
        f"{variant}: {per_cpu:.2f} M registers/CPU-s, {(s1 - s0) / span / 1e6:.2f} M/s at {cores:.2f} cores, "
        f"dropped polls {dropped}, RSS {now:.1f} MB (peak {peak:.1f}; anon {anon:.1f}, file {file:.1f}); cores by thread {threads}; "
        f"switches/s {sw}",
        flush=True,
    )
    return per_cpu


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    rounds, seconds, variants = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="airlock-ab-") as work:
        server_bin = os.path.join(work, "modbus_server")
        flags = subprocess.run(
            ["pkg-config", "--cflags", "--libs", "libmodbus"], check=True, capture_output=True, text=True
        ).stdout.split()
        source = os.path.join(root, "crates/airlock/benches/c/modbus_server.c")
        subprocess.run(["cc", "-O2", "-o", server_bin, source, *flags], check=True)
        with open(os.path.join(work, "ab.toml"), "w") as f:
            f.write(config(os.path.join(work, "data")))
        server = subprocess.Popen(
            ["taskset", "-c", "1", server_bin, str(PORT), str(REGISTERS)], stdout=subprocess.PIPE, text=True
        )
        figures = collections.defaultdict(list)
        try:
            if server.stdout.readline().strip() != "listening":
                sys.exit("the libmodbus server did not start")
            for _ in range(rounds):
                for variant in variants:
                    figures[variant].append(one_run(variant, seconds, work))
        finally:
            server.kill()
            server.wait()
        for variant in variants:
            runs = figures[variant]
            print(f"{variant}: {' '.join(f'{x:.2f}' for x in runs)}, mean {sum(runs) / len(runs):.2f}")


if __name__ == "__main__":
    main()
