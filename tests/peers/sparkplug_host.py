#!/usr/bin/env python3
"""A Sparkplug B host for ferrogate's Sparkplug tests, built on code we did
not write: every payload is decoded with Eclipse Tahu's generated
`sparkplug_b_pb2` (as shipped by mqtt-spb-wrapper) and again with
pysparkplug's payload classes; commands are encoded with Tahu's pb2.

Usage: sparkplug_host.py <broker port>

Subscribes to spBv1.0/# and prints one JSON line per message:
  {"topic", "type", "seq", "timestamp", "metrics": [{"name", "alias",
   "datatype", "value", "is_null", "is_historical", "timestamp",
   "properties": {key: value}}], "pysparkplug": "ok" | "<error>",
   "pysparkplug_values": {name: value}}
STATE messages are printed as {"topic", "type": "STATE", "state": <json>}.
Prints `READY` once subscribed. Commands on stdin (each answered `OK`
once the broker has the message):
  state <host_id> <true|false> <timestamp>       retained STATE
  rebirth <group> <node>                         NCMD Node Control/Rebirth
  dcmd <group> <node> <device> <metric> <datatype> <value>
  raw <topic> <hex>                              arbitrary bytes
Exits when stdin closes.
"""

import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pysparkplug
from mqtt_spb_wrapper.spb_protobuf import sparkplug_b_pb2 as tahu

BITS = {1: 8, 2: 16, 3: 32, 4: 64}
PROPERTY_FIELDS = ["int_value", "long_value", "float_value", "double_value",
                   "boolean_value", "string_value"]

births = {}
# Per device: name -> datatype and alias -> (name, datatype), from the
# latest birth, as a host resolves DATA metrics that carry neither.
birth_types = {}
lock = threading.Lock()


def value_of(m, datatype):
    """A metric's value the way Tahu's Python core reads it."""
    if m.is_null:
        return None
    which = m.WhichOneof("value")
    if which is None:
        return None
    v = getattr(m, which)
    if datatype in BITS:
        bits = BITS[datatype]
        if v >= 2 ** (bits - 1):
            v -= 2 ** bits
    if isinstance(v, bytes):
        return v.hex()
    return v


def properties_of(m):
    out = {}
    for key, pv in zip(m.properties.keys, m.properties.values):
        which = pv.WhichOneof("value")
        out[key] = getattr(pv, which) if which else None
    return out


def pysparkplug_decode(kind, device_key, raw):
    classes = {"NBIRTH": pysparkplug.NBirth, "DBIRTH": pysparkplug.DBirth,
               "NDATA": pysparkplug.NData, "DDATA": pysparkplug.DData,
               "NDEATH": pysparkplug.NDeath, "DDEATH": pysparkplug.DDeath,
               "NCMD": pysparkplug.NCmd, "DCMD": pysparkplug.DCmd}
    cls = classes[kind]
    try:
        if kind in ("NBIRTH", "DBIRTH"):
            payload = cls.decode(raw)
            births[device_key] = payload
        elif kind in ("DDATA", "NDATA"):
            payload = cls.decode(raw, birth=births.get(device_key))
        else:
            payload = cls.decode(raw)
        values = {}
        for metric in getattr(payload, "metrics", []) or []:
            v = metric.value
            values[str(metric.name if metric.name is not None else metric.alias)] = (
                v.hex() if isinstance(v, bytes) else v)
        return "ok", values
    except Exception as e:  # noqa: BLE001 - the test reads the reason
        return f"{type(e).__name__}: {e}", {}


def on_message(client, userdata, msg):
    levels = msg.topic.split("/")
    if len(levels) >= 3 and levels[1] == "STATE":
        try:
            state = json.loads(msg.payload)
        except ValueError:
            state = msg.payload.decode("utf-8", "replace")
        line = {"topic": msg.topic, "type": "STATE", "state": state, "retain": bool(msg.retain)}
    elif len(levels) >= 4:
        kind = levels[2]
        p = tahu.Payload()
        try:
            p.ParseFromString(msg.payload)
        except Exception as e:  # noqa: BLE001
            print(json.dumps({"topic": msg.topic, "type": kind, "error": str(e)}), flush=True)
            return
        device_key = "/".join(levels[3:])
        if kind in ("NBIRTH", "DBIRTH"):
            birth_types[device_key] = {
                "names": {m.name: m.datatype for m in p.metrics},
                "aliases": {m.alias: (m.name, m.datatype) for m in p.metrics if m.HasField("alias")},
            }
        known = birth_types.get(device_key, {"names": {}, "aliases": {}})

        def resolved(m):
            if m.HasField("name"):
                return m.name, m.datatype or known["names"].get(m.name, 0)
            name, datatype = known["aliases"].get(m.alias, (None, 0))
            return name, m.datatype or datatype

        metrics = [{
            "name": m.name if m.HasField("name") else None,
            "resolved_name": resolved(m)[0],
            "alias": m.alias if m.HasField("alias") else None,
            "datatype": m.datatype,
            "value": value_of(m, resolved(m)[1]),
            "is_null": m.is_null,
            "is_historical": m.is_historical,
            "timestamp": m.timestamp if m.HasField("timestamp") else None,
            "properties": properties_of(m),
        } for m in p.metrics]
        verdict, values = pysparkplug_decode(kind, device_key, msg.payload)
        line = {"topic": msg.topic, "type": kind,
                "seq": p.seq if p.HasField("seq") else None,
                "timestamp": p.timestamp if p.HasField("timestamp") else None,
                "metrics": metrics, "pysparkplug": verdict,
                "pysparkplug_values": values, "retain": bool(msg.retain)}
    else:
        line = {"topic": msg.topic, "type": "other"}
    with lock:
        print(json.dumps(line), flush=True)


def command_payload(name, datatype, value):
    p = tahu.Payload()
    p.timestamp = int(time.time() * 1000)
    m = p.metrics.add()
    m.name = name
    m.datatype = datatype
    if datatype in (1, 2, 3):
        v = int(value)
        if v < 0:
            v += 2 ** BITS[datatype]
        m.int_value = v
    elif datatype in (5, 6, 7):
        m.int_value = int(value)
    elif datatype in (4, 8, 13):
        v = int(value)
        if v < 0:
            v += 2 ** 64
        m.long_value = v
    elif datatype == 9:
        m.float_value = float(value)
    elif datatype == 10:
        m.double_value = float(value)
    elif datatype == 11:
        m.boolean_value = value in ("true", "1", "True")
    else:
        m.string_value = value
    return p.SerializeToString()


def main():
    port = int(sys.argv[1])
    # A persistent session: what is published while the host is away (a
    # broker restart) is kept for it.
    client = mqtt.Client(client_id=f"spb-host-{port}-{time.time_ns()}", clean_session=False)
    subscribed = threading.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe("spBv1.0/#", qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not subscribed.wait(10):
        print("NOT SUBSCRIBED", flush=True)
        return
    print("READY", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "state":
            host, online, ts = words[1], words[2] == "true", int(words[3])
            info = client.publish(f"spBv1.0/STATE/{host}",
                                  json.dumps({"online": online, "timestamp": ts}), qos=1, retain=True)
        elif words[0] == "rebirth":
            topic = f"spBv1.0/{words[1]}/NCMD/{words[2]}"
            info = client.publish(topic, command_payload("Node Control/Rebirth", 11, "true"), qos=1)
        elif words[0] == "dcmd":
            group, node, device, metric, datatype, value = words[1:7]
            topic = f"spBv1.0/{group}/DCMD/{node}/{device}"
            info = client.publish(topic, command_payload(metric, int(datatype), value), qos=1)
        elif words[0] == "raw":
            info = client.publish(words[1], bytes.fromhex(words[2] if len(words) > 2 else ""), qos=1)
        else:
            print(f"UNKNOWN {words[0]}", flush=True)
            continue
        info.wait_for_publish(10)
        with lock:
            print("OK", flush=True)
    client.loop_stop()


if __name__ == "__main__":
    main()
