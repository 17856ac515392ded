#!/usr/bin/env python3
"""An independent Sparkplug B encoder for tests: pysparkplug (PyPI; we did not write it)
encoding the messages of an edge node, published to a broker with paho-mqtt.

Usage: sparkplug_publish.py PORT GROUP NODE. Reads one JSON command per stdin line and prints
{"ok": true} once the broker has acknowledged it:
  {"type": "NBIRTH"|"NDATA"|"DBIRTH"|"DDATA", "device": D (D* only), "seq": N,
   "metrics": [{"name", "alias", "datatype" (pysparkplug DataType name), "value", "is_null"}]}
  {"type": "NDEATH", "bd_seq": N}   {"type": "DDEATH", "device": D, "seq": N}
  {"type": "RAW", "topic": T, "hex": "..."}   (any bytes, for garbage)
"""
import json
import sys

import paho.mqtt.client as mqtt
import pysparkplug as sp

port, group, node = int(sys.argv[1]), sys.argv[2], sys.argv[3]
client = mqtt.Client(client_id=f"peer-{node}")
client.connect("127.0.0.1", port)
client.loop_start()
NOW = 1795867200000


def metric(m):
    return sp.Metric(
        timestamp=m.get("timestamp", NOW),
        name=m.get("name"),
        datatype=sp.DataType[m["datatype"]],
        value=m.get("value"),
        alias=m.get("alias"),
        is_null=m.get("is_null", False),
    )


for line in sys.stdin:
    cmd = json.loads(line)
    kind = cmd["type"]
    base = f"spBv1.0/{group}/{kind}/{node}"
    metrics = tuple(metric(m) for m in cmd.get("metrics", []))
    if kind == "RAW":
        topic, payload = cmd["topic"], bytes.fromhex(cmd["hex"])
    elif kind == "NDEATH":
        bd = sp.Metric(timestamp=NOW, name="bdSeq", datatype=sp.DataType.INT64, value=cmd["bd_seq"])
        topic, payload = base, sp.NDeath(timestamp=NOW, bd_seq_metric=bd).encode()
    elif kind == "DDEATH":
        topic, payload = f"{base}/{cmd['device']}", sp.DDeath(timestamp=NOW, seq=cmd["seq"]).encode()
    else:
        cls = {"NBIRTH": sp.NBirth, "NDATA": sp.NData, "DBIRTH": sp.DBirth, "DDATA": sp.DData}[kind]
        topic = base if kind.startswith("N") else f"{base}/{cmd['device']}"
        message = cls(timestamp=NOW, seq=cmd.get("seq", 0), metrics=metrics)
        payload = message.encode(include_dtypes=kind.endswith("BIRTH"))
    client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
    print(json.dumps({"ok": True}), flush=True)
client.loop_stop()
