#!/usr/bin/env python3
"""Opens N MQTT 3.1.1 connections over TLS to a hub and holds them, like N idle edges:
each CONNECTs with its own client id (edge-NNNNN) and a last-will on its status topic,
SUBSCRIBEs to its ack topic, publishes a retained `online` presence (QoS 1), then sends
PINGREQ every keep-alive/2 until told to stop. Standard library only (asyncio + ssl).

    mqtt_conns.py --port P (--ca CA [--cert C --key K | --cert-dir D] | --plain) [--count 1000]
                  [--hold 60]
                  [--ready-file F] [--stop-file F]

Prints progress and a final line `connected N failed M in S s`. Writes --ready-file once
every connection is up (or has failed), and exits when --stop-file appears or after --hold
seconds, whichever is first. Loopback only by intent; bounded by --count and --hold.
"""

import argparse
import asyncio
import json
import os
import resource
import ssl
import struct
import time


def _len(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def packet(kind, body):
    return bytes([kind]) + _len(len(body)) + body


def presence(edge, state):
    return json.dumps({"v": 1, "state": state, "edge": edge, "site": "bench",
                       "version": "bench", "queue_depth": 0, "queue_bytes": 0,
                       "oldest_age_ms": None, "ts": int(time.time() * 1000)}).encode()


def connect_packet(cid, keepalive):
    will_topic = f"warren/v1/status/{cid}"
    # clean session, will flag, will QoS 1, will retain
    flags = 0x02 | 0x04 | (1 << 3) | 0x20
    var = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    will = presence(cid, "offline")
    payload = _str(cid) + _str(will_topic) + struct.pack("!H", len(will)) + will
    return packet(0x10, var + payload)


async def read_packet(reader):
    head = await reader.readexactly(1)
    mult, n = 1, 0
    while True:
        b = (await reader.readexactly(1))[0]
        n += (b & 0x7F) * mult
        if not b & 0x80:
            break
        mult *= 128
    body = await reader.readexactly(n) if n else b""
    return head[0], body


class Client:
    def __init__(self, cid, args, ctx):
        self.cid, self.args, self.ctx = cid, args, ctx
        self.writer = None

    async def run(self, up, stop):
        a = self.args
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(a.host, a.port, ssl=self.ctx,
                                        server_hostname=a.server_name if self.ctx else None),
                a.connect_timeout)
            self.writer = writer
            writer.write(connect_packet(self.cid, a.keepalive))
            kind, body = await asyncio.wait_for(read_packet(reader), a.connect_timeout)
            if kind != 0x20 or body[1] != 0:
                raise RuntimeError(f"CONNACK {kind:#x} {body!r}")
            # SUBSCRIBE (packet id 1) to the ack topic, QoS 1
            writer.write(packet(0x82, struct.pack("!H", 1) +
                                _str(f"warren/v1/ack/{self.cid}") + b"\x01"))
            # PUBLISH retained presence, QoS 1, packet id 2
            writer.write(packet(0x30 | 0x02 | 0x01, _str(f"warren/v1/status/{self.cid}") +
                                struct.pack("!H", 2) + presence(self.cid, "online")))
            await writer.drain()
            got = set()
            while got != {0x90, 0x40}:
                kind, _ = await asyncio.wait_for(read_packet(reader), a.connect_timeout)
                got.add(kind & 0xF0)
            up.set_result(True)
        except Exception as e:  # noqa: BLE001 - report any failure per client
            if not up.done():
                up.set_result(e)
            return
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), a.keepalive / 2)
                except asyncio.TimeoutError:
                    writer.write(b"\xc0\x00")  # PINGREQ
                    await writer.drain()
                    # drain whatever arrived (PINGRESP, retained presences of others: none,
                    # we only subscribe to our own ack topic)
                    while True:
                        try:
                            await asyncio.wait_for(read_packet(reader), 0.01)
                        except asyncio.TimeoutError:
                            break
            writer.write(b"\xe0\x00")  # DISCONNECT
            await writer.drain()
        except Exception:  # noqa: BLE001
            pass
        finally:
            writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--server-name", default="localhost")
    ap.add_argument("--ca", help="CA of the server certificate (TLS)")
    ap.add_argument("--plain", action="store_true", help="plain MQTT, no TLS")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--cert-dir", help="each client's own certificate, DIR/<client id>.pem "
                    "and .key (a hub admits an edge only under its certificate's name)")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=50, help="handshakes in flight")
    ap.add_argument("--keepalive", type=int, default=60)
    ap.add_argument("--connect-timeout", type=float, default=30)
    ap.add_argument("--hold", type=float, default=60)
    ap.add_argument("--prefix", default="edge-")
    ap.add_argument("--ready-file")
    ap.add_argument("--stop-file")
    a = ap.parse_args()

    def context(cid):
        if a.plain:
            return None
        ctx = ssl.create_default_context(cafile=a.ca)
        if a.cert_dir:
            ctx.load_cert_chain(os.path.join(a.cert_dir, f"{cid}.pem"),
                                os.path.join(a.cert_dir, f"{cid}.key"))
        elif a.cert:
            ctx.load_cert_chain(a.cert, a.key)
        return ctx

    shared = None if a.cert_dir else context(None)
    stop = asyncio.Event()
    sem = asyncio.Semaphore(a.parallel)
    t0 = time.time()
    results = []
    tasks = []

    async def one(i):
        async with sem:
            up = asyncio.get_running_loop().create_future()
            cid = f"{a.prefix}{i:05d}"
            c = Client(cid, a, shared or context(cid))
            tasks.append(asyncio.ensure_future(c.run(up, stop)))
            r = await up
            results.append(r)
            n = len(results)
            if n % 100 == 0:
                print(f"{time.time() - t0:6.2f}s {n} done", flush=True)

    await asyncio.gather(*(one(i) for i in range(a.count)))
    ok = sum(1 for r in results if r is True)
    errs = [r for r in results if r is not True]
    print(f"connected {ok} failed {len(errs)} in {time.time() - t0:.2f} s", flush=True)
    for e in errs[:5]:
        print("  error:", repr(e), flush=True)
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write(f"{ok} {len(errs)}\n")
    deadline = time.time() + a.hold
    while time.time() < deadline and not (a.stop_file and os.path.exists(a.stop_file)):
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)


if __name__ == "__main__":
    # One socket per client: the usual soft limit of 1024 would stop at about a thousand.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main())
