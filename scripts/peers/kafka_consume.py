"""Reads every message of a topic from the beginning with kafka-python (an independent Kafka
client from PyPI) and prints one JSON object per message: partition, offset, key, headers and
the value's id. Stops once `expected` messages are read or after `seconds` (bounded).

usage: kafka_consume.py BOOTSTRAP TOPIC EXPECTED [SECONDS]

A secured broker is reached with these in the environment: KAFKA_CAFILE (TLS, trusting that CA),
KAFKA_CERTFILE and KAFKA_KEYFILE (a client certificate), KAFKA_SASL (PLAIN, SCRAM-SHA-256 or
SCRAM-SHA-512) with KAFKA_USER and KAFKA_PASSWORD. With KAFKA_DISTINCT=1 EXPECTED counts distinct
ids (a record produced twice, as at-least-once allows, counts once).
"""

import json
import os
import sys
import time

from kafka import KafkaConsumer, TopicPartition

bootstrap, topic, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
security = {}
cafile, sasl = os.environ.get("KAFKA_CAFILE"), os.environ.get("KAFKA_SASL")
if cafile:
    security.update(ssl_cafile=cafile, ssl_certfile=os.environ.get("KAFKA_CERTFILE"),
                    ssl_keyfile=os.environ.get("KAFKA_KEYFILE"))
if sasl:
    security.update(sasl_mechanism=sasl, sasl_plain_username=os.environ["KAFKA_USER"],
                    sasl_plain_password=os.environ["KAFKA_PASSWORD"])
security["security_protocol"] = ("SASL_" if sasl else "") + ("SSL" if cafile else "PLAINTEXT")
consumer = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False, api_version_auto_timeout_ms=10000,
                         **security)
partitions = consumer.partitions_for_topic(topic) or set()
assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
consumer.assign(assigned)
consumer.seek_to_beginning(*assigned)
seen = 0
distinct = os.environ.get("KAFKA_DISTINCT") == "1"
ids = set()
deadline = time.monotonic() + seconds
while seen < expected and time.monotonic() < deadline:
    for tp, messages in consumer.poll(timeout_ms=500).items():
        for m in messages:
            value = json.loads(m.value)
            headers = {k: v.decode() for k, v in (m.headers or [])}
            print(json.dumps({"partition": tp.partition, "offset": m.offset, "key": m.key.decode(),
                              "headers": headers, "id": value["id"]}), flush=True)
            ids.add(value["id"])
            seen = len(ids) if distinct else seen + 1
consumer.close()
