#!/usr/bin/env python3
"""An independent Sparkplug B decoder for tests: pysparkplug (PyPI; we did not write it) decoding
what arrives on spBv1.0/# at a broker, with paho-mqtt as the subscriber.

Usage: sparkplug_listen.py PORT. Prints {"ready": true} once subscribed, then one JSON line per
message: {"topic", "type", "seq", "metrics": [{"name", "alias", "datatype", "value",
"is_historical", "is_null"}]}; DATA metrics have their names resolved from the last birth by
alias, as a host application would. Exits when stdin closes.
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
import pysparkplug as sp

port = int(sys.argv[1])
births = {}
DECODERS = {"NBIRTH": sp.NBirth, "DBIRTH": sp.DBirth, "NDATA": sp.NData, "DDATA": sp.DData}


def metric_json(m):
    value = m.value
    if isinstance(value, bytes):
        value = value.hex()
    return {
        "name": m.name,
        "alias": m.alias,
        "datatype": int(m.datatype),
        "value": value,
        "is_historical": bool(m.is_historical),
        "is_null": bool(m.is_null),
    }


def on_message(client, userdata, msg):
    parts = msg.topic.split("/")
    kind = parts[2]
    owner = "/".join(parts[3:])
    try:
        if kind == "NDEATH":
            death = sp.NDeath.decode(msg.payload)
            out = {"topic": msg.topic, "type": kind, "seq": None, "metrics": [metric_json(death.bd_seq_metric)]}
        else:
            birth_key = owner if kind in ("DBIRTH", "DDATA") else parts[3]
            birth = births.get(birth_key) if kind.endswith("DATA") else None
            payload = DECODERS[kind].decode(msg.payload, birth=birth)
            if kind.endswith("BIRTH"):
                births[birth_key] = payload
            out = {"topic": msg.topic, "type": kind, "seq": payload.seq, "metrics": [metric_json(m) for m in payload.metrics]}
    except Exception as e:  # a message the independent decoder refuses is a test failure
        out = {"topic": msg.topic, "type": kind, "error": repr(e)}
    print(json.dumps(out), flush=True)


def on_connect(client, userdata, flags, rc):
    client.subscribe("spBv1.0/#", qos=1)


def on_subscribe(client, userdata, mid, granted_qos):
    print(json.dumps({"ready": True}), flush=True)


# A persistent session: what is published while the host reconnects (a broker restart) waits.
client = mqtt.Client(client_id="sparkplug-host", clean_session=False)
client.on_connect = on_connect
client.on_message = on_message
client.on_subscribe = on_subscribe
client.connect("127.0.0.1", port)
threading.Thread(target=lambda: (sys.stdin.read(), client.disconnect()), daemon=True).start()
client.loop_forever()
