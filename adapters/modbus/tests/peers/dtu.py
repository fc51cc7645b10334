#!/usr/bin/env python3
"""A dial-in device (a 4G DTU in front of a Modbus RTU slave) for
ferrogate-modbus tests: it connects out to the gateway, sends its
registration packet, then answers Modbus RTU requests arriving on that
socket with pymodbus' RTU framer and datastore.

Usage: dtu.py <port> <registration> '<units json>' [heartbeat]
(units as in slave.py; with `heartbeat`, the registration is sent again
before every answer, as modems repeat it as their heartbeat)

Prints `CONNECTED` once registered, `CLOSED` when the gateway closes the
connection. Reads commands on stdin:
  set <unit> <fc> <address> v1 v2 ... -> `OK`
  reconnect                            -> drops the connection, dials in again
Exits when stdin closes.
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
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.simulator.simcore import SimCore

logging.disable(logging.CRITICAL)


def block(values):
    return ModbusSequentialDataBlock(1, list(values) if values else [0])


async def serve(port, registration, context, stop, heartbeat):
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            await asyncio.sleep(0.05)
    writer.write(registration.encode())
    await writer.drain()
    print("CONNECTED", flush=True)
    framer = FramerRTU(DecodePDU(True))
    buffer = b""
    while not stop.is_set():
        read = asyncio.ensure_future(reader.read(512))
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stopped in done:
            read.cancel()
            break
        stopped.cancel()
        data = read.result()
        if not data:
            print("CLOSED", flush=True)
            return
        buffer += data
        used, pdu = framer.handleFrame(buffer, 0, 0)
        buffer = buffer[used:]
        if pdu is None:
            continue
        response = await pdu.datastore_update(context, pdu.dev_id)
        response.dev_id = pdu.dev_id
        if heartbeat:
            writer.write(registration.encode())
            await writer.drain()
        writer.write(framer.buildFrame(response))
        await writer.drain()
    writer.close()


async def main():
    port, registration, units = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    heartbeat = sys.argv[4:] == ["heartbeat"]
    devices = {
        int(unit): ModbusDeviceContext(hr=block(areas.get("hr")), ir=block(areas.get("ir")))
        for unit, areas in units.items()
    }
    # As pymodbus' own server does with a device context.
    context = SimCore(ModbusServerContext(devices=devices, single=False).simdevices)
    stop = asyncio.Event()
    task = asyncio.ensure_future(serve(port, registration, context, stop, heartbeat))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        parts = line.decode().split()
        if parts and parts[0] == "reconnect":
            stop.set()
            await task
            stop = asyncio.Event()
            task = asyncio.ensure_future(serve(port, registration, context, stop, heartbeat))
        elif parts and parts[0] == "set":
            unit, fc, address = int(parts[1]), int(parts[2]), int(parts[3])
            await context.async_setValues(unit, fc, address, [int(v) for v in parts[4:]])
            print("OK", flush=True)
    stop.set()


if __name__ == "__main__":
    asyncio.run(main())
