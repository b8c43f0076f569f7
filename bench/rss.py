#!/usr/bin/env python3
"""Figure 4: resident memory (ps -o rss=, KiB) of edge and hub.

edge:  idle RSS after start; then, with its hub unreachable, RSS as the queue fills to
       --events (default 1,000,000) distinct legacy datagrams sent paced at --rate; the fill
       is bounded by --fill-timeout (default 600 s) and reports the largest count reached.
       Also RSS after a restart with that queue on disk.
hub:   idle RSS after start; then RSS with --conns (default 1000) TLS MQTT clients connected
       (bench/mqtt_conns.py: each an idle edge: CONNECT with will, SUBSCRIBE, retained presence,
       PINGREQ). mTLS by default (every client presents the `bench` certificate); --anonymous
       drops client_ca_file from the hub config instead; --via local connects the clients in
       plain MQTT to the hub's listen_local instead (rumqttd's share, without the TLS front).

    bench/rss.py [--part edge|hub|both] [--events 1000000] [--rate 25000] [--conns 1000]
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wb  # noqa: E402


def settle_rss(pid, secs=2.0):
    time.sleep(secs)
    return wb.rss_kib(pid)


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def edge_part(args):
    d = wb.workdir("rss-edge")
    udp = wb.free_port(wb.socket.SOCK_DGRAM)
    cfg = wb.edge_config(d, udp, recv_buffer=33554432, max_bytes=2 << 30)
    sock = os.path.join(d, "state", "edge.sock")
    edge = wb.Procs.spawn("edge", [wb.EDGE, "run", "--config", cfg], os.path.join(d, "edge.log"))
    wb.wait_status(sock, edge)
    wb.log(f"RESULT edge idle RSS {settle_rss(edge.pid)} KiB (threads {threads(edge.pid)})")

    exe = wb.flooder(d)
    t0 = time.time()
    deadline = t0 + args.fill_timeout
    sent = 0
    marks = [m for m in (10_000, 100_000, 250_000, 500_000, 750_000, 1_000_000, args.events)
             if m <= args.events]
    marks = sorted(set(marks))
    peak = 0
    # send in chunks of CHUNK so a run that hits the deadline stops soon after
    chunk = max(args.rate * 5, 1000)
    while sent < args.events and time.time() < deadline:
        n = min(chunk, args.events - sent)
        fl = wb.flood(exe, udp, n, args.rate, first=sent)
        while fl.poll() is None:
            time.sleep(0.5)
            peak = max(peak, wb.rss_kib(edge.pid))
            if time.time() > deadline + 30:
                fl.kill()
        fl.communicate()
        sent += n
        # let the committer catch up before the next chunk
        limit = time.time() + 60
        while time.time() < limit:
            st = wb.status(sock)
            if st["counters"]["accepted"] + sum(st["counters"]["rejected"].values()) >= sent:
                break
            time.sleep(0.2)
        st = wb.status(sock)
        q = st["queue_depth"]
        rss = wb.rss_kib(edge.pid)
        peak = max(peak, rss)
        if marks and q >= marks[0]:
            wb.log(f"  queued {q:>8} ({st['queue_bytes']} B): RSS {rss} KiB "
                   f"(peak so far {peak} KiB) after {time.time() - t0:.0f}s")
        while marks and q >= marks[0]:
            marks.pop(0)
    st = wb.status(sock)
    lost = sent - st["counters"]["accepted"] - sum(st["counters"]["rejected"].values())
    q = st["queue_depth"]
    wb.log(f"RESULT edge with {q} queued (sent {sent}, not accepted {lost}): RSS "
           f"{settle_rss(edge.pid)} KiB, peak while filling {peak} KiB, "
           f"fill took {time.time() - t0:.0f}s; db dir {du(os.path.join(d, 'state'))}")
    wb.Procs.stop(edge)
    t1 = time.time()
    edge = wb.Procs.spawn("edge", [wb.EDGE, "run", "--config", cfg], os.path.join(d, "edge.log"))
    wb.wait_status(sock, edge, timeout=300)
    wb.log(f"RESULT edge restarted with {wb.status(sock)['queue_depth']} queued: status after "
           f"{time.time() - t1:.2f}s, RSS {settle_rss(edge.pid)} KiB")
    wb.Procs.stop(edge)
    if not args.keep:
        shutil.rmtree(os.path.join(d, "state"), ignore_errors=True)


def du(path):
    out = subprocess.run(["du", "-sh", path], capture_output=True, text=True).stdout
    return out.split()[0] if out else "?"


def hub_part(args):
    d = wb.workdir("rss-hub")
    pki = wb.pki(os.path.join(d, "pki"), edges=("bench",))
    port = wb.free_port()
    local = wb.free_port()
    cfg = wb.hub_config(os.path.join(d, "hub"), port, pki, client_auth=not args.anonymous,
                        notifier="log", listen_local=local if args.via == "local" else None)
    hsock = os.path.join(d, "hub", "state", "hub.sock")
    hub = wb.Procs.spawn("hub", [wb.HUB, "run", "--config", cfg], os.path.join(d, "hub.log"))
    wb.wait_status(hsock, hub)
    wb.log(f"RESULT hub idle RSS {settle_rss(hub.pid)} KiB (threads {threads(hub.pid)}, "
           f"fds {fds(hub.pid)})")

    ready, stopf = os.path.join(d, "ready"), os.path.join(d, "stop")
    argv = [sys.executable, os.path.join(wb.ROOT, "bench", "mqtt_conns.py"),
            "--count", str(args.conns),
            "--hold", str(args.hold), "--ready-file", ready, "--stop-file", stopf]
    if args.via == "local":
        # plain MQTT straight to rumqttd's listen_local: the broker's share without the TLS front
        argv += ["--port", str(local), "--plain"]
    else:
        argv += ["--port", str(port), "--ca", f"{pki}/ca.pem"]
    if args.via == "tls" and not args.anonymous:
        # The hub admits an edge only under its own certificate's name: one per client.
        wb.log(f"issuing {args.conns} edge certificates")
        wb.pki(pki, edges=[f"edge-{i:05d}" for i in range(args.conns)])
        argv += ["--cert-dir", pki]
    cl = wb.Procs.spawn("mqtt_conns", argv, os.path.join(d, "conns.log"))
    t0 = time.time()
    peak = 0
    while not os.path.exists(ready) and time.time() < t0 + args.hold:
        if cl.poll() is not None:
            break
        peak = max(peak, wb.rss_kib(hub.pid))
        time.sleep(0.5)
    with open(os.path.join(d, "conns.log")) as f:
        wb.log("clients: " + f.read().strip().splitlines()[-1])
    time.sleep(3)
    try:
        st = wb.status(hsock)
        edges = len(st["edges"])
        wb.log(f"hub status: open_files {st.get('open_files')} of open_files_limit "
               f"{st.get('open_files_limit')}")
    except (OSError, ValueError) as e:  # e.g. the hub is out of file descriptors
        edges = f"? (status: {e})"
    wb.log(f"RESULT hub with {args.conns} {args.via} clients: RSS {wb.rss_kib(hub.pid)} KiB "
           f"(peak while connecting {peak} KiB), threads {threads(hub.pid)}, fds "
           f"{fds(hub.pid)}, edges in hub status {edges}; connect phase "
           f"{time.time() - t0 - 3:.1f}s")
    time.sleep(args.settle)
    wb.log(f"  after another {args.settle}s: RSS {wb.rss_kib(hub.pid)} KiB")
    open(stopf, "w").close()
    try:
        cl.wait(60)
    except subprocess.TimeoutExpired:
        pass
    wb.Procs.stop(cl)
    wb.log(f"  after the clients left: RSS {settle_rss(hub.pid, 3)} KiB, fds {fds(hub.pid)}")
    wb.Procs.stop(hub)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="both", choices=["edge", "hub", "both"])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=25_000, help="paced fill rate (loss-free)")
    ap.add_argument("--fill-timeout", type=float, default=600)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=300, help="bound on the client's life")
    ap.add_argument("--settle", type=float, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the edge's queue database")
    ap.add_argument("--anonymous", action="store_true")
    ap.add_argument("--via", default="tls", choices=["tls", "local"],
                    help="local: plain MQTT to the hub's listen_local (rumqttd alone, no TLS front)")
    wb.add_quiet_arg(ap)
    args = ap.parse_args()
    wb.prepare(args)
    if args.part in ("edge", "both"):
        edge_part(args)
    if args.part in ("hub", "both"):
        hub_part(args)


if __name__ == "__main__":
    main()
