"""Produces N messages like airlock's (a key per machine, ~200-byte JSON values, three headers)
with kafka-python, acks from all in-sync replicas and LZ4, and prints the records per second:
the baseline of the Kafka drain benchmark.

usage: kafka_produce.py BOOTSTRAP TOPIC N
"""

import json
import sys
import time

from kafka import KafkaProducer

bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all", compression_type="lz4", linger_ms=5,
                         batch_size=256 * 1024)
started = time.monotonic()
for i in range(n):
    key = f"acme/dortmund/pressing/line3/cell1/press{i % 4}/speed"
    value = json.dumps({"id": f"py-s{i}", "gateway_time": "2026-11-29T12:00:00.000Z", "quality": "good",
                        "topic": key, "type": "f64", "value": float(i)}).encode()
    producer.send(topic, key=key.encode(), value=value,
                  headers=[("id", f"py-s{i}".encode()), ("class", b"series"), ("gateway", b"py")])
producer.flush()
print(f"{n / (time.monotonic() - started):.0f}")
