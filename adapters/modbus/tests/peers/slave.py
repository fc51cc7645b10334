#!/usr/bin/env python3
"""A real Modbus slave (pymodbus 3.x) for ferrogate-modbus tests.

Usage: slave.py '<json spec>'

spec = {
  "tcp": 0,                       # listen on 127.0.0.1:<port>, 0 = any free port
  "rtu_over_tcp": false,          # with "tcp": RTU framing over the TCP socket
  "ascii": false,                 # ASCII framing (`:`, hex, LRC) on the serial line or the TCP socket
  "refuse_second": false,         # with "tcp": close any connection while one is open
  "serial": "/tmp/ttyX",          # or: an RTU slave on this serial device (a socat pty)
  "units": {"1": {"hr": [..], "ir": [..], "co": [..], "di": [..]}},
  "silent": [3],                  # units that hear requests but never answer
}

Each area holds values from protocol address 0; reading past the end
answers exception 2 (illegal data address).

Prints `READY <port>` once listening. Reads commands on stdin:
  get <unit> <fc> <address> <count>   -> `VALUES v1 v2 ...`
  set <unit> <fc> <address> v1 v2 ... -> `OK`
  silent <unit> 0|1                   -> `OK` (stop or resume answering)
  connections                         -> `CONNECTIONS <accepted> <refused>`
Exits when stdin closes, so a test that dies takes its slave with it.
"""

import asyncio
import json
import logging
import sys

from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

logging.disable(logging.CRITICAL)

SILENT = set()
_send = ServerRequestHandler.server_send


def _send_unless_silent(self, pdu, addr):
    if pdu is not None and pdu.dev_id in SILENT:
        return
    _send(self, pdu, addr)


ServerRequestHandler.server_send = _send_unless_silent

# A serial-to-Ethernet converter that allows one TCP connection: any
# connection made while another is open is closed at once, and counted.
REFUSE_SECOND = False
CONNECTIONS = {"accepted": 0, "refused": 0}
_made = ServerRequestHandler.connection_made


def _made_unless_busy(self, transport):
    others = len(self.listener.active_connections) - 1 if self.listener else 0
    if REFUSE_SECOND and others > 0:
        CONNECTIONS["refused"] += 1
        transport.close()
        return
    CONNECTIONS["accepted"] += 1
    _made(self, transport)


ServerRequestHandler.connection_made = _made_unless_busy


def block(values):
    # pymodbus maps protocol address 0 to block address 1.
    return ModbusSequentialDataBlock(1, list(values) if values else [0])


async def main():
    spec = json.loads(sys.argv[1])
    SILENT.update(spec.get("silent", []))
    global REFUSE_SECOND
    REFUSE_SECOND = bool(spec.get("refuse_second"))
    devices = {}
    for unit, areas in spec["units"].items():
        devices[int(unit)] = ModbusDeviceContext(
            hr=block(areas.get("hr")),
            ir=block(areas.get("ir")),
            co=block([bool(v) for v in areas.get("co", [])]),
            di=block([bool(v) for v in areas.get("di", [])]),
        )
    context = ModbusServerContext(devices=devices, single=False)
    if "serial" in spec:
        server = ModbusSerialServer(
            context,
            framer=FramerType.ASCII if spec.get("ascii") else FramerType.RTU,
            port=spec["serial"],
            baudrate=19200,
            ignore_missing_devices=True,
        )
    else:
        framer = FramerType.RTU if spec.get("rtu_over_tcp") else FramerType.SOCKET
        if spec.get("ascii"):
            framer = FramerType.ASCII
        server = ModbusTcpServer(
            context,
            framer=framer,
            address=("127.0.0.1", spec.get("tcp", 0)),
            ignore_missing_devices=True,
        )
    await server.serve_forever(background=True)
    port = 0
    sockets = getattr(server.transport, "sockets", None)
    if sockets:
        port = sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while True:
        line = await reader.readline()
        if not line:
            break
        parts = line.decode().split()
        if not parts:
            continue
        try:
            if parts[0] == "connections":
                print(
                    f"CONNECTIONS {CONNECTIONS['accepted']} {CONNECTIONS['refused']}",
                    flush=True,
                )
                continue
            if parts[0] == "silent":
                unit = int(parts[1])
                (SILENT.add if parts[2] == "1" else SILENT.discard)(unit)
                print("OK", flush=True)
                continue
            unit, fc, address = int(parts[1]), int(parts[2]), int(parts[3])
            if parts[0] == "get":
                values = await server.context.async_getValues(
                    unit, fc, address, int(parts[4])
                )
                print("VALUES " + " ".join(str(int(v)) for v in values), flush=True)
            elif parts[0] == "set":
                values = [int(v) for v in parts[4:]]
                if fc in (1, 2, 5, 15):
                    values = [bool(v) for v in values]
                await server.context.async_setValues(unit, fc, address, values)
                print("OK", flush=True)
        except Exception as exc:  # noqa: BLE001 - report anything to the test
            print(f"ERROR {exc}", flush=True)
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
