#!/usr/bin/env python3
"""A Modbus TCP device that airlock did not write: pymodbus serving a register map.

Reads a JSON list of tags on stdin's first line, each
  {"space": "holding_register"|"input_register"|"coil"|"discrete_input",
   "address": int, "type": "u16"|"i16"|"u32"|"i32"|"u64"|"i64"|"f32"|"f64"|"string"|"bool",
   "order": "abcd"|"badc"|"cdab"|"dcba", "value": ..., "bit": int (bool in a register)}
encodes every value with pymodbus's own converter (ModbusClientMixin.convert_to_registers),
serves them on 127.0.0.1 at a free port, and prints {"port": N} when listening.
Then, for every further stdin line "report", prints {"functions": {code: count}}: every
function code received (counted by pymodbus's trace_pdu hook). Exits when stdin closes.
"""
import asyncio
import json
import socket
import sys
import threading
from collections import Counter

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusTcpServer

DT = ModbusClientMixin.DATATYPE
TYPES = {"u16": DT.UINT16, "i16": DT.INT16, "u32": DT.UINT32, "i32": DT.INT32, "u64": DT.UINT64,
         "i64": DT.INT64, "f32": DT.FLOAT32, "f64": DT.FLOAT64, "string": DT.STRING}
SIZE = 512
functions = Counter()


def registers(tag):
    word_order = "little" if tag.get("order", "abcd") in ("cdab", "dcba") else "big"
    regs = ModbusClientMixin.convert_to_registers(tag["value"], TYPES[tag["type"]], word_order=word_order)
    if tag.get("order", "abcd") in ("badc", "dcba"):
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    return regs


def build(tags):
    spaces = {"coil": [False] * SIZE, "discrete_input": [False] * SIZE,
              "holding_register": [0] * SIZE, "input_register": [0] * SIZE}
    for tag in tags:
        space, at = spaces[tag["space"]], tag["address"]
        if tag["type"] == "bool" and "bit" in tag:
            space[at] |= int(bool(tag["value"])) << tag["bit"]
        elif tag["type"] == "bool":
            space[at] = bool(tag["value"])
        else:
            regs = registers(tag)
            space[at:at + len(regs)] = regs
    device = ModbusDeviceContext(
        co=ModbusSequentialDataBlock(1, spaces["coil"]),
        di=ModbusSequentialDataBlock(1, spaces["discrete_input"]),
        hr=ModbusSequentialDataBlock(1, spaces["holding_register"]),
        ir=ModbusSequentialDataBlock(1, spaces["input_register"]),
    )
    # Blocks are 1-based in pymodbus: block address 1 serves protocol address 0.
    return ModbusServerContext(devices=device, single=True)


def trace_pdu(sending, pdu):
    if not sending:
        functions[pdu.function_code] += 1
    return pdu


def control():
    for line in sys.stdin:
        if line.strip() == "report":
            print(json.dumps({"functions": {str(k): v for k, v in functions.items()}}), flush=True)
    import os
    os._exit(0)


async def main():
    tags = json.loads(sys.stdin.readline())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ModbusTcpServer(build(tags), address=("127.0.0.1", port), trace_pdu=trace_pdu)
    task = asyncio.create_task(server.serve_forever())
    for _ in range(100):
        await asyncio.sleep(0.05)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            continue
    print(json.dumps({"port": port}), flush=True)
    threading.Thread(target=control, daemon=True).start()
    await task


if __name__ == "__main__":
    asyncio.run(main())
