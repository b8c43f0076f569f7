#!/usr/bin/env python3
"""Figure 2: edge ingest rate — datagrams accepted (durable in the sled queue) per second.

The edge's hub is unreachable (127.0.0.1:1, tls = false), so nothing leaves the queue.
The C flooder (bench/udpflood.c) sends distinct legacy datagrams to the edge's UDP port.

1. Burst: COUNT datagrams unpaced into a fresh edge. Reports the sender's rate, the edge's
   peak accepted/s (best 1 s window of status polls), its mean accepted/s over the whole
   drain, and loss (sent - accepted - rejected - duplicates; the kernel's UDP RcvbufErrors
   delta is shown next to it).
2. Sustained: paced runs of DURATION seconds each at rising rates, each into a fresh edge,
   until one loses datagrams; then bisects between the last loss-free and the first lossy rate.
   Reports the highest loss-free rate seen. The kernel buffer (32 MiB asked, about 90k of
   these datagrams here) hides a deficit for a while: compare each run's mean accepted/s with
   the offered rate, and use long runs (--duration 60) for a rate that can really be held.

    sudo bench/edge_ingest.py [--count 200000] [--duration 10] [--rates 10000,20000,...]

Bounded: every wait has a deadline; every process started is killed at the end.
"""

import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wb  # noqa: E402


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / ticks


def start_edge(args, tag):
    d = wb.workdir(f"ingest-{tag}")
    port = wb.free_port(wb.socket.SOCK_DGRAM)
    cfg = wb.edge_config(d, port, recv_buffer=args.recv_buffer, max_bytes=args.max_bytes)
    p = wb.Procs.spawn("edge", [wb.EDGE, "run", "--config", cfg], os.path.join(d, "edge.log"))
    sock = os.path.join(d, "state", "edge.sock")
    wb.wait_status(sock, p)
    return p, sock, port, d


def handled(st):
    c = st["counters"]
    return c["accepted"] + c["duplicates"] + sum(c["rejected"].values())


def run_once(args, exe, count, rate, tag):
    """Sends count datagrams at rate (0 = unpaced) into a fresh edge; returns a result dict."""
    if not args.no_wait_quiet:
        wb.wait_quiet()
    edge, sock, port, d = start_edge(args, tag)
    try:
        drops0 = wb.udp_rcvbuf_errors()
        cpu0 = cpu_seconds(edge.pid)
        watch = wb.CpuWatch()
        samples = []
        t0 = time.time()
        fl = wb.flood(exe, port, count, rate)
        sender_done = None
        last_change = t0
        last = -1
        deadline = t0 + args.timeout
        while time.time() < deadline:
            st = wb.status(sock)
            now = time.time()
            acc = st["counters"]["accepted"]
            samples.append((now, acc))
            if fl.poll() is not None and sender_done is None:
                sender_done = now
            h = handled(st)
            if h != last:
                last, last_change = h, now
            if sender_done and (h >= count or now - last_change > 3):
                break
            time.sleep(args.poll)
        out = fl.communicate(timeout=60)[0].strip()
        st = wb.status(sock)
        cpu = cpu_seconds(edge.pid) - cpu0
        other, wall = watch.other(cpu)
        drops = wb.udp_rcvbuf_errors() - drops0
        rss = wb.rss_kib(edge.pid)
        time.sleep(5)  # the edge gives freed memory back once idle for 2 s
        rss_idle = wb.rss_kib(edge.pid)
    finally:
        wb.Procs.stop(edge)
        if not args.keep:
            shutil.rmtree(os.path.join(d, "state"), ignore_errors=True)
    c = st["counters"]
    acc = c["accepted"]
    rejected = sum(c["rejected"].values())
    lost = count - acc - rejected - c["duplicates"]
    # accepted/s: best 1 s window, and the mean from the first to the last accepted change
    peak = 0.0
    j = 0
    for i in range(len(samples)):
        while samples[i][0] - samples[j][0] > 1.0:
            j += 1
        if i > j and samples[i][0] - samples[j][0] >= 0.5:
            peak = max(peak, (samples[i][1] - samples[j][1]) / (samples[i][0] - samples[j][0]))
    moving = [s for k, s in enumerate(samples) if k == 0 or s[1] != samples[k - 1][1]]
    first_t = t0
    last_t = moving[-1][0] if moving else t0
    mean = acc / (last_t - first_t) if last_t > first_t else 0.0
    return dict(count=count, rate=rate, sender=out, accepted=acc, rejected=rejected,
                duplicates=c["duplicates"], lost=lost, kernel_drops=drops,
                peak_per_s=peak, mean_per_s=mean, drain_s=last_t - first_t,
                edge_cpu_s=cpu, rss_kib=rss, rss_idle_kib=rss_idle, queue_depth=st["queue_depth"],
                queue_bytes=st["queue_bytes"], dir=d, other_cpu=other, wall=wall)


def show(r):
    wb.log(f"  rate {r['rate'] or 'unpaced'}: {r['sender']}")
    wb.log(f"  accepted {r['accepted']} rejected {r['rejected']} duplicates {r['duplicates']} "
           f"lost {r['lost']} (kernel RcvbufErrors +{r['kernel_drops']})")
    wb.log(f"  accepted/s peak(1s) {r['peak_per_s']:.0f}, mean {r['mean_per_s']:.0f} over "
           f"{r['drain_s']:.2f}s; edge CPU {r['edge_cpu_s']:.2f}s "
           f"({1e6 * r['edge_cpu_s'] / max(r['accepted'], 1):.1f} us/event); "
           f"RSS {r['rss_kib']} KiB, 5 s later {r['rss_idle_kib']} KiB; queue {r['queue_depth']} events {r['queue_bytes']} B")
    wb.log(f"  other processes used {r['other_cpu']:.1f} CPU-s in {r['wall']:.1f}s "
           f"({r['other_cpu'] / max(r['wall'], 1e-9):.0%} of one core)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200_000, help="burst size")
    ap.add_argument("--duration", type=float, default=10, help="seconds per paced run")
    ap.add_argument("--rates", default="10000,20000,30000,40000,60000,80000,120000")
    ap.add_argument("--bisect", type=int, default=3, help="bisection steps after the first loss")
    ap.add_argument("--recv-buffer", type=int, default=33554432)
    ap.add_argument("--poll", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=180, help="per run")
    ap.add_argument("--max-bytes", type=int, default=4 << 30, help="queue.max_bytes")
    ap.add_argument("--keep", action="store_true", help="keep each run's queue database")
    ap.add_argument("--skip-burst", action="store_true")
    ap.add_argument("--skip-sustained", action="store_true")
    wb.add_quiet_arg(ap)
    args = ap.parse_args()
    wb.prepare(args)
    exe = wb.flooder(wb.workdir("flood"))
    if not args.skip_burst:
        wb.log(f"burst: {args.count} datagrams, unpaced")
        show(run_once(args, exe, args.count, 0, "burst"))
    if args.skip_sustained:
        return

    def loss_free(rate, what):
        wb.log(f"{what}: {rate}/s for {args.duration}s")
        r = run_once(args, exe, int(rate * args.duration), rate, f"r{rate}")
        show(r)
        return r["lost"] == 0

    good, bad = None, None
    for rate in [int(x) for x in args.rates.split(",")]:
        if loss_free(rate, "paced"):
            good = rate
        else:
            bad = rate
            break
    for _ in range(args.bisect if bad and good else 0):
        rate = (good + bad) // 2
        if loss_free(rate, "paced (bisect)"):
            good = rate
        else:
            bad = rate
    wb.log(f"sustained: highest loss-free rate {good}/s; lowest lossy rate {bad}/s "
           f"(runs of {args.duration}s)")


if __name__ == "__main__":
    main()
