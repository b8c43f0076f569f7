#!/usr/bin/env python3
"""Figure 3: edge forward rate and hub throughput, over mutual TLS, on loopback.

1. `hub pki init` + `hub pki issue bench`; a hub config (embedded broker, listen_tls on a free
   loopback port, client CA, one `file` notifier, one route for logins); an edge config
   pointing at it with ca/cert/key.
2. With the hub stopped, the edge queues COUNT distinct legacy datagrams (sent paced at RATE
   so the kernel drops none; the script checks accepted == COUNT).
3. The hub starts. Timed from the moment the edge's link comes up (edge status link.since_ms):
   - forward: until the edge's queue_depth is 0 (every event sent, made durable by the hub's
     inbox and acked back) -> events/s forwarded+acked;
   - end to end: until the hub's file notifier holds COUNT lines -> envelopes/s through
     inbox -> dedup -> route -> file notifier, each delivery recorded durably.
   Hub status (received, acked, outbox, delivered) is sampled along the way.
   --order edge-restart (default) stops the edge after queueing and starts it again once the
   hub is subscribed; --order hub-late starts the hub under a retrying edge instead.

    bench/edge_forward.py [--count 100000] [--rate 20000] [--window 1000] [--timeout 600] [--web]
"""

import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wb  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=20_000, help="paced ingest rate while queueing")
    ap.add_argument("--window", type=int, default=None, help="edge hub.window (default 1000)")
    ap.add_argument("--notifier", default="file", choices=["file", "log"])
    ap.add_argument("--timeout", type=float, default=600, help="bound on the drain, seconds")
    ap.add_argument("--poll", type=float, default=0.25)
    ap.add_argument("--keep", action="store_true", help="keep the queue and inbox databases")
    ap.add_argument("--order", default="edge-restart", choices=["edge-restart", "hub-late"],
                    help="edge-restart: hub up and subscribed before the edge reconnects; "
                    "hub-late: the hub starts while the edge is retrying (shows the "
                    "first-window stall)")
    ap.add_argument("--rss-after", type=float, default=0,
                    help="also report RSS this many seconds after the drain, once idle")
    ap.add_argument("--web", action="store_true",
                    help="serve the hub's page, which also records each event for it")
    wb.add_quiet_arg(ap)
    args = ap.parse_args()
    wb.prepare(args)
    d = wb.workdir("forward")
    pki = wb.pki(os.path.join(d, "pki"), edges=("bench",))
    tls_port = wb.free_port()
    hub_dir = os.path.join(d, "hub")
    hub_cfg = wb.hub_config(hub_dir, tls_port, pki, client_auth=True, notifier=args.notifier,
                            web=args.web)
    udp = wb.free_port(wb.socket.SOCK_DGRAM)
    edge_cfg = wb.edge_config(
        os.path.join(d, "edge"), udp, hub_addr=f"localhost:{tls_port}",
        tls=dict(ca=f"{pki}/ca.pem", cert=f"{pki}/bench.pem", key=f"{pki}/bench.key"),
        window=args.window)
    esock = os.path.join(d, "edge", "state", "edge.sock")
    hsock = os.path.join(hub_dir, "state", "hub.sock")
    out = os.path.join(hub_dir, "out.log")

    edge = wb.Procs.spawn("edge", [wb.EDGE, "run", "--config", edge_cfg],
                          os.path.join(d, "edge.log"))
    wb.wait_status(esock, edge)
    exe = wb.flooder(d)
    wb.log(f"queueing {args.count} events at {args.rate}/s (hub stopped)")
    fl = wb.flood(exe, udp, args.count, args.rate)
    deadline = time.time() + args.count / max(args.rate, 1) + 120
    while time.time() < deadline:
        st = wb.status(esock)
        if fl.poll() is not None and st["counters"]["accepted"] >= args.count:
            break
        if fl.poll() is not None and time.time() > deadline - 110:
            break
        time.sleep(0.2)
    wb.log(fl.communicate(timeout=30)[0].strip())
    st = wb.status(esock)
    c = st["counters"]
    wb.log(f"edge: accepted {c['accepted']} rejected {c['rejected']} queue_depth "
           f"{st['queue_depth']} queue_bytes {st['queue_bytes']} RSS {wb.rss_kib(edge.pid)} KiB")
    queued = st["queue_depth"]
    if queued != args.count:
        wb.log(f"WARNING: {args.count - queued} datagrams not queued; timing the {queued} that are")

    if args.order == "edge-restart":
        # The hub opens its TLS front before its own client has subscribed to the event
        # topics; an edge that connects in between has its first window dropped by rumqttd and
        # waits ack_timeout (30 s) to resend it. To time the forwarding itself, stop the edge
        # (its queue is durable), start the hub, wait until its client is connected, then start
        # the edge again: the backlog is read back from disk.
        wb.Procs.stop(edge)
        t_hub = time.time()
        hub = wb.Procs.spawn("hub", [wb.HUB, "run", "--config", hub_cfg],
                             os.path.join(d, "hub.log"))
        wb.wait_status(hsock, hub)
        limit = time.time() + 30
        while not wb.status(hsock)["broker_connected"] and time.time() < limit:
            time.sleep(0.05)
        wb.log(f"hub client connected to its broker {time.time() - t_hub:.2f}s after start")
        time.sleep(1)  # its SUBSCRIBE goes out right after the ConnAck
        t_edge = time.time()
        edge = wb.Procs.spawn("edge", [wb.EDGE, "run", "--config", edge_cfg],
                              os.path.join(d, "edge.log"))
        wb.wait_status(esock, edge, timeout=120)
        wb.log(f"edge restarted with {wb.status(esock)['queue_depth']} queued: status answers "
               f"after {time.time() - t_edge:.2f}s, RSS {wb.rss_kib(edge.pid)} KiB")
        t_hub = t_edge
    else:
        t_hub = time.time()
        hub = wb.Procs.spawn("hub", [wb.HUB, "run", "--config", hub_cfg],
                             os.path.join(d, "hub.log"))
        wb.wait_status(hsock, hub)
        wb.log(f"hub answers status after {time.time() - t_hub:.2f}s")

    watch = wb.CpuWatch()
    cpu0 = wb.proc_cpu_seconds(edge.pid) + wb.proc_cpu_seconds(hub.pid)
    t_link = t_drained = t_done = None
    samples = []
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        now = time.time()
        es = wb.status(esock)
        lines = wb.count_lines(out)
        try:
            hs = wb.status(hsock)
        except (OSError, ValueError):
            hs = None
        if t_link is None and es["link"]["connected"]:
            t_link = es["link"]["since_ms"] / 1000.0
            wb.log(f"edge link up {t_link - t_hub:.2f}s after the hub/edge was started")
        if t_drained is None and es["queue_depth"] == 0:
            t_drained = now
            wb.log(f"edge queue empty: {now - t_link:.2f}s after link up")
        if lines >= queued:
            t_done = now
            wb.log(f"file notifier has {lines} lines: {now - t_link:.2f}s after link up")
        n = (hs or {}).get("notifiers", {}).get("out", {})
        samples.append((now, es["queue_depth"], es["counters"]["acked"], lines,
                        (hs or {}).get("received"), n.get("outbox"), n.get("delivered")))
        if len(samples) % int(max(1, 5 / args.poll)) == 0:
            wb.log(f"  depth {es['queue_depth']} acked {es['counters']['acked']} "
                   f"resent {es['counters']['resent']} hub received {samples[-1][4]} "
                   f"outbox {samples[-1][5]} delivered {samples[-1][6]} lines {lines}")
        if t_done and t_drained:
            break
        time.sleep(args.poll)
    es = wb.status(esock)
    hs = wb.status(hsock)
    edge_rss, hub_rss = wb.rss_kib(edge.pid), wb.rss_kib(hub.pid)
    ecpu, hcpu = wb.proc_cpu_seconds(edge.pid), wb.proc_cpu_seconds(hub.pid)
    other, wall = watch.other(ecpu + hcpu - cpu0)
    wb.log(f"CPU while timing: edge+hub {ecpu + hcpu - cpu0:.1f}s (edge total {ecpu:.1f}s, hub "
           f"total {hcpu:.1f}s); other processes {other:.1f}s in {wall:.1f}s "
           f"({other / max(wall, 1e-9):.0%} of one core)")
    wb.log(f"edge counters {es['counters']}")
    wb.log(f"hub received {hs['received']} duplicates {hs['duplicates']} acked {hs['acked']} "
           f"notifiers {hs['notifiers']} dead {hs['dead_letters']}")
    wb.log(f"RSS after: edge {edge_rss} KiB, hub {hub_rss} KiB")
    if args.rss_after:
        time.sleep(args.rss_after)
        wb.log(f"RSS {args.rss_after:g}s later, idle: edge {wb.rss_kib(edge.pid)} KiB, "
               f"hub {wb.rss_kib(hub.pid)} KiB")
    if t_drained:
        wb.log(f"RESULT forward+ack: {queued} events in {t_drained - t_link:.2f}s = "
               f"{queued / (t_drained - t_link):.0f}/s (from link up; poll {args.poll}s)")
    else:
        acked = es["counters"]["acked"]
        wb.log(f"RESULT forward+ack: NOT drained in {args.timeout}s; acked {acked} = "
               f"{acked / (time.time() - t_link):.0f}/s")
    if t_done:
        wb.log(f"RESULT end to end (file notifier): {queued} lines in {t_done - t_link:.2f}s = "
               f"{queued / (t_done - t_link):.0f}/s")
    else:
        lines = wb.count_lines(out)
        wb.log(f"RESULT end to end: NOT done in {args.timeout}s; {lines} lines = "
               f"{lines / (time.time() - t_link):.0f}/s")
    # hub inbox rate (received) vs delivery rate, from the samples
    rec = [(s[0], s[4]) for s in samples if s[4] is not None]
    if len(rec) > 1:
        moving = [r for k, r in enumerate(rec) if k == 0 or r[1] != rec[k - 1][1]]
        if len(moving) > 1:
            (ta, ra), (tb, rb) = moving[0], moving[-1]
            if tb > ta:
                wb.log(f"hub inbox (received) {rb - ra} in {tb - ta:.2f}s = {(rb - ra) / (tb - ta):.0f}/s")
    # notifier alone: deliveries per second once the inbox had everything
    if t_drained and t_done and t_done > t_drained:
        at = [s for s in samples if s[0] >= t_drained and s[6] is not None]
        if at:
            t0, d0 = at[0][0], at[0][6]
            dl = [s for s in samples if s[6] is not None][-1]
            if dl[0] > t0:
                wb.log(f"notifier alone (after the edge drained): {dl[6] - d0} deliveries in "
                       f"{dl[0] - t0:.2f}s = {(dl[6] - d0) / (dl[0] - t0):.0f}/s")
    wb.Procs.stop(edge)
    wb.Procs.stop(hub)
    if not args.keep:
        for sub in ("edge/state", "hub/state"):
            shutil.rmtree(os.path.join(d, sub), ignore_errors=True)
    wb.log(f"files in {d}")


if __name__ == "__main__":
    main()
