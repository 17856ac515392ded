#!/usr/bin/env python3
"""A baseline OPC UA client for the benchmark: asyncua (PyPI) subscribing to N load nodes and
counting the data changes it receives, the way a Python collector would.

Usage: opcua_count.py ENDPOINT N SECONDS. Prints one JSON line: {"values": received during the
measured window, "seconds": its length, "cpu_seconds": this process's CPU time in it}.
"""
import asyncio
import json
import sys
import time

from asyncua import Client, ua

endpoint, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
count = 0


class Handler:
    def datachange_notification(self, node, val, data):
        global count
        count += 1


async def main():
    async with Client(endpoint, timeout=30) as client:
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=100, RequestedLifetimeCount=300, RequestedMaxKeepAliveCount=10,
            MaxNotificationsPerPublish=1000, PublishingEnabled=True, Priority=0)
        sub = await client.create_subscription(params, Handler())
        nodes = [client.get_node(f"ns=2;s=Load.{i}") for i in range(n)]
        for i in range(0, n, 1000):
            await sub.subscribe_data_change(nodes[i:i + 1000], queuesize=1, sampling_interval=100)
        await asyncio.sleep(2)
        global count
        count, t0, c0 = 0, time.monotonic(), time.process_time()
        await asyncio.sleep(seconds)
        values, elapsed, cpu = count, time.monotonic() - t0, time.process_time() - c0
    print(json.dumps({"values": values, "seconds": elapsed, "cpu_seconds": cpu}), flush=True)


asyncio.run(main())
