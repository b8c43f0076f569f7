#!/usr/bin/env python3
"""warren next to the classic chain it replaces, the same workload through both, interleaved.

warren:  datagram -> edge (durable queue) -> mTLS -> hub (durable inbox, dedup) -> file notifier
classic: datagram -> hared (PyPI) -> mosquitto -> mqttwarn (PyPI) -> file

Both write the same line, `User {user} logged into {hostname} from {rhost} at {tstamp}`, to a
file. Each round starts both chains afresh, one after the other (the order alternates between
rounds: A B, B A, ...), and measures on each:

- latency at rest: one datagram at a time, 20 ms apart, from `sendto` to its line in the file
  (the file is polled every 0.2 ms); p50, p99, max;
- steady load: `--rate` datagrams/s for `--steady` seconds; CPU seconds and RSS of every
  process of the chain;
- drain: `--drain` events at once, to the last line. warren: queued on the edge with the hub
  stopped, then the hub started, timed from the edge's link-up (edge_forward.py's method).
  classic: `mosquitto_pub -l -q 1` into mosquitto with mqttwarn subscribed (hared, one MQTT
  connection per datagram, cannot be fed faster than it connects), timed from its start.
  RSS of the hub (and of mqttwarn) at the last line, and again 5 s later.

Prints a Markdown table (medians over the rounds and warren/classic ratios), writes
`results.json` and `chart.svg` in `--out`. `--smoke` runs a tiny workload (seconds), which the
test suite does so this script cannot rot. Needs mosquitto and mosquitto_pub, gcc, and a
virtual environment with `hared` and `mqttwarn` (`--venv`; bench/compare.sh makes one).

    bench/compare.py [--rounds 3] [--drain 20000] [--latency 200] [--steady 30] [--rate 100]
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wb  # noqa: E402

LINE = "User {user} logged into {hostname} from {rhost} at {tstamp}"
# Seconds between the drain's last line and the second RSS reading (smoke: shorter).
SETTLE = 5
HARE_FUNCS = os.path.join(wb.ROOT, "hub", "tests", "fixtures", "mqttwarn", "hare_funcs.py")


def datagram(user):
    return json.dumps({"tst": int(time.time()), "hostname": "vm", "user": user,
                       "service": "sshd", "rhost": "192.0.2.10", "tty": "ssh"}).encode()


def wait_lines(path, n, timeout, what):
    """When `path` has `n` lines. Reads only what was appended since its last look: counting
    the whole file every 10 ms took a tenth of a core from the chain under test."""
    deadline = time.time() + timeout
    lines = 0
    with open(path, "rb") as f:
        while time.time() < deadline:
            lines += f.read().count(b"\n")
            if lines >= n:
                return time.time()
            time.sleep(0.01)
    raise RuntimeError(f"{what}: {lines} of {n} lines after {timeout}s")


def wait_port(port, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.bench_name} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.bench_name} did not listen on {port}")


class Chain:
    """What both chains share: the UDP port they take datagrams on, the file they write."""

    name = ""
    udp = 0
    out = ""

    def procs(self):
        """name -> Popen of every process of the chain."""
        raise NotImplementedError

    def send(self, user):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(datagram(user), ("127.0.0.1", self.udp))

    def probe(self, tag, timeout=60):
        """Sends one datagram until its line is in the file: the chain is ready."""
        n = wb.count_lines(self.out)
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.send(f"{tag}{n}")
            try:
                return wait_lines(self.out, n + 1, 2, f"{self.name} probe")
            except RuntimeError:
                n = wb.count_lines(self.out)
        raise RuntimeError(f"{self.name}: no line in {timeout}s")

    def latency(self, count):
        """Seconds from sendto to the line being in the file, for `count` datagrams."""
        times = []
        with open(self.out, "rb") as f:
            for i in range(count):
                f.seek(0, os.SEEK_END)
                want = f"User lat{i} logged".encode()
                t0 = time.perf_counter()
                self.send(f"lat{i}")
                deadline, seen = t0 + 10, b""
                # Its own line, not a late one of something else (a probe sent again).
                while want not in seen:
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"{self.name}: datagram {i} not written in 10 s")
                    time.sleep(0.0002)
                    seen += f.read()
                times.append(time.perf_counter() - t0)
                time.sleep(0.02)
        return times

    def steady(self, exe, rate, seconds, tag):
        """CPU seconds of each process while `rate`/s datagrams flow for `seconds`; RSS after."""
        procs = self.procs()
        cpu0 = {k: wb.proc_cpu_seconds(p.pid) for k, p in procs.items()}
        base = wb.count_lines(self.out)
        n = rate * seconds
        fl = subprocess.run([exe, "127.0.0.1", str(self.udp), str(n), str(rate), "0", tag],
                            capture_output=True, text=True, check=True)
        wb.log(f"{self.name} steady: {fl.stdout.strip()}")
        wait_lines(self.out, base + n, 60 + seconds, f"{self.name} steady")
        return {k: {"cpu_s": round(wb.proc_cpu_seconds(p.pid) - cpu0[k], 2),
                    "rss_kib": wb.rss_kib(p.pid)} for k, p in procs.items()}


class Warren(Chain):
    name = "warren"

    def __init__(self, d):
        self.d = d
        pki = wb.pki(os.path.join(d, "pki"), edges=("bench",))
        self.tls_port = wb.free_port()
        hub_dir = os.path.join(d, "hub")
        self.hub_cfg = wb.hub_config(hub_dir, self.tls_port, pki)
        self.udp = wb.free_port(socket.SOCK_DGRAM)
        self.edge_cfg = wb.edge_config(
            os.path.join(d, "edge"), self.udp, hub_addr=f"localhost:{self.tls_port}",
            tls=dict(ca=f"{pki}/ca.pem", cert=f"{pki}/bench.pem", key=f"{pki}/bench.key"))
        self.esock = os.path.join(d, "edge", "state", "edge.sock")
        self.hsock = os.path.join(hub_dir, "state", "hub.sock")
        self.out = os.path.join(hub_dir, "out.log")
        open(self.out, "a").close()
        self.hub = self.edge = None

    def procs(self):
        return {"hub": self.hub, "edge": self.edge}

    def start_hub(self):
        self.hub = wb.Procs.spawn("hub", [wb.HUB, "run", "--config", self.hub_cfg],
                                  os.path.join(self.d, "hub.log"))
        wb.wait_status(self.hsock, self.hub)
        deadline = time.time() + 30
        while not wb.status(self.hsock)["broker_connected"]:
            if time.time() > deadline:
                raise RuntimeError("the hub's client did not connect to its broker")
            time.sleep(0.05)
        time.sleep(0.5)  # its SUBSCRIBE goes out right after the ConnAck

    def start_edge(self):
        self.edge = wb.Procs.spawn("edge", [wb.EDGE, "run", "--config", self.edge_cfg],
                                   os.path.join(self.d, "edge.log"))
        wb.wait_status(self.esock, self.edge, timeout=120)
        deadline = time.time() + 60
        while not (link := wb.status(self.esock)["link"])["connected"]:
            if time.time() > deadline:
                raise RuntimeError("the edge did not link up to the hub")
            time.sleep(0.02)
        return link["since_ms"] / 1000.0

    def start(self):
        self.start_hub()
        self.start_edge()
        self.probe("warm")

    def drain(self, exe, count):
        wb.Procs.stop(self.hub)
        base = wb.count_lines(self.out)
        accepted = wb.status(self.esock)["counters"]["accepted"]
        fl = subprocess.run([exe, "127.0.0.1", str(self.udp), str(count), "20000", "0", "drain"],
                            capture_output=True, text=True, check=True)
        wb.log(f"warren drain: {fl.stdout.strip()}")
        deadline = time.time() + 60 + count / 1000
        while wb.status(self.esock)["counters"]["accepted"] < accepted + count:
            if time.time() > deadline:
                raise RuntimeError("the edge did not accept every drain datagram")
            time.sleep(0.05)
        # The edge is stopped while the hub starts (its queue is durable), so the timing starts
        # at a link to a hub that is subscribed, as in edge_forward.py.
        wb.Procs.stop(self.edge)
        self.start_hub()
        t0 = self.start_edge()
        t1 = wait_lines(self.out, base + count, 60 + count / 200, "warren drain")
        return {"per_s": round(count / (t1 - t0)), "seconds": round(t1 - t0, 3),
                **rss_after_drain({"hub": self.hub, "edge": self.edge})}


def rss_after_drain(procs):
    """RSS at the last line, and again once idle (warren gives memory back after 2 s idle)."""
    now = {k: wb.rss_kib(p.pid) for k, p in procs.items()}
    time.sleep(SETTLE)
    return {"rss_kib": now, "rss_settled_kib": {k: wb.rss_kib(p.pid) for k, p in procs.items()}}


class Classic(Chain):
    name = "classic"

    def __init__(self, d, venv):
        self.d, self.venv = d, venv
        self.mqtt = wb.free_port()
        self.udp = wb.free_port(socket.SOCK_DGRAM)
        self.out = os.path.join(d, "out.log")
        open(self.out, "a").close()
        with open(os.path.join(d, "mosquitto.conf"), "w") as f:
            f.write(f"listener {self.mqtt} 127.0.0.1\nallow_anonymous true\n"
                    "persistence false\nlog_dest none\n")
        with open(os.path.join(d, "hared.ini"), "w") as f:
            f.write(f"[defaults]\nverbose = False\nlistenhost = 127.0.0.1\n"
                    f"listenport = {self.udp}\nmqtthost = 127.0.0.1\nmqttport = {self.mqtt}\n"
                    "topic = logging/hare\n")
        shutil.copy(HARE_FUNCS, os.path.join(d, "hare_funcs.py"))
        with open(os.path.join(d, "mqttwarn.ini"), "w") as f:
            f.write(f"""[defaults]
hostname  = '127.0.0.1'
port      = {self.mqtt}
loglevel  = WARNING
functions = 'hare_funcs.py'
launch    = file

[config:file]
append_newline = True
targets = {{ 'out': ['{self.out}'] }}

[logging/hare]
targets = file:out
format  = {LINE}
alldata = moredata()
""")
        self.mosquitto = self.mqttwarn = self.hared = None

    def procs(self):
        return {"hared": self.hared, "mosquitto": self.mosquitto, "mqttwarn": self.mqttwarn}

    def start(self):
        self.mosquitto = wb.Procs.spawn(
            "mosquitto", ["mosquitto", "-c", os.path.join(self.d, "mosquitto.conf")],
            os.path.join(self.d, "mosquitto.log"))
        wait_port(self.mqtt, self.mosquitto)
        bin_dir = os.path.join(self.venv, "bin")
        self.mqttwarn = wb.Procs.spawn(
            "mqttwarn", [os.path.join(bin_dir, "mqttwarn"),
                         "--config-file=" + os.path.join(self.d, "mqttwarn.ini")],
            os.path.join(self.d, "mqttwarn.log"))
        env = dict(os.environ, HARED_INI=os.path.join(self.d, "hared.ini"))
        self.hared = wb.Procs.spawn("hared", [os.path.join(bin_dir, "hared")],
                                    os.path.join(self.d, "hared.log"), env=env)
        self.probe("warm")

    def drain(self, _exe, count):
        base = wb.count_lines(self.out)
        lines = os.path.join(self.d, "drain.jsonl")
        with open(lines, "w") as f:
            for i in range(count):
                d = json.loads(datagram(f"drain{i}"))
                d["remote"] = "127.0.0.1"  # what hared adds
                f.write(json.dumps(d) + "\n")
        t0 = time.time()
        with open(lines) as f:
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.mqtt), "-q", "1",
                            "-t", "logging/hare", "-l"], stdin=f, check=True, timeout=600)
        t1 = wait_lines(self.out, base + count, 60 + count / 200, "classic drain")
        return {"per_s": round(count / (t1 - t0)), "seconds": round(t1 - t0, 3),
                **rss_after_drain({"mqttwarn": self.mqttwarn, "mosquitto": self.mosquitto})}

    def stop(self):
        for p in (self.hared, self.mqttwarn, self.mosquitto):
            if p:
                wb.Procs.stop(p, grace=5)


def run_chain(chain, args, exe):
    chain.start()
    lat = chain.latency(args.latency)
    ms = sorted(t * 1000 for t in lat)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    latency = {"n": len(ms), "p50_ms": round(statistics.median(ms), 3),
               "p99_ms": round(p99, 3), "max_ms": round(ms[-1], 3)}
    wb.log(f"{chain.name} latency: {latency}")
    steady = chain.steady(exe, args.rate, args.steady, "steady")
    wb.log(f"{chain.name} steady {args.rate}/s for {args.steady}s: {steady}")
    drain = chain.drain(exe, args.drain)
    wb.log(f"{chain.name} drain of {args.drain}: {drain}")
    if isinstance(chain, Warren):
        for p in (chain.edge, chain.hub):
            wb.Procs.stop(p)
    else:
        chain.stop()
    return {"latency": latency, "steady": steady, "drain": drain}


def summarize(rounds):
    """Medians over the rounds, per chain, and warren/classic ratios."""
    def med(chain, f):
        return statistics.median(f(r[chain]) for r in rounds)

    s = {}
    for c in ("warren", "classic"):
        s[c] = {
            "drain_per_s": med(c, lambda r: r["drain"]["per_s"]),
            "p50_ms": med(c, lambda r: r["latency"]["p50_ms"]),
            "p99_ms": med(c, lambda r: r["latency"]["p99_ms"]),
            "steady_cpu_s": med(c, lambda r: sum(p["cpu_s"] for p in r["steady"].values())),
            "steady_rss_mib": med(c, lambda r: sum(p["rss_kib"] for p in r["steady"].values())) / 1024,
            "drain_rss_mib": med(c, lambda r: max(r["drain"]["rss_kib"].values())) / 1024,
            "settled_rss_mib": med(c, lambda r: max(r["drain"]["rss_settled_kib"].values())) / 1024,
        }
    s["ratio"] = {
        "drain": s["warren"]["drain_per_s"] / max(s["classic"]["drain_per_s"], 1e-9),
        "p50": s["warren"]["p50_ms"] / max(s["classic"]["p50_ms"], 1e-9),
        "p99": s["warren"]["p99_ms"] / max(s["classic"]["p99_ms"], 1e-9),
    }
    return s


def table(s, args):
    w, c, r = s["warren"], s["classic"], s["ratio"]
    rows = [
        ("", "warren", "classic chain", "warren / classic"),
        ("---", "---:", "---:", "---:"),
        (f"drain of {args.drain} events, to the last line", f"{w['drain_per_s']:,.0f}/s",
         f"{c['drain_per_s']:,.0f}/s", f"{r['drain']:.1f}×"),
        (f"latency at rest, p50 ({args.latency} single events)", f"{w['p50_ms']:.2f} ms",
         f"{c['p50_ms']:.2f} ms", f"{r['p50']:.2f}"),
        ("latency at rest, p99", f"{w['p99_ms']:.2f} ms", f"{c['p99_ms']:.2f} ms",
         f"{r['p99']:.2f}"),
        (f"CPU, {args.rate}/s for {args.steady} s (all processes)", f"{w['steady_cpu_s']:.2f} s",
         f"{c['steady_cpu_s']:.2f} s", ""),
        ("RSS under steady load (all processes)", f"{w['steady_rss_mib']:.1f} MiB",
         f"{c['steady_rss_mib']:.1f} MiB", ""),
        ("RSS after the drain (largest process)", f"{w['drain_rss_mib']:.1f} MiB (hub)",
         f"{c['drain_rss_mib']:.1f} MiB", ""),
        (f"RSS {SETTLE} s after the drain (largest process)", f"{w['settled_rss_mib']:.1f} MiB (hub)",
         f"{c['settled_rss_mib']:.1f} MiB", ""),
    ]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def chart(s, path):
    """Three bar pairs: drain rate, p50 and p99 latency, each scaled to its larger bar."""
    panels = [("drain, events/s (more is better)", "drain_per_s", "{:,.0f}"),
              ("latency p50, ms (less is better)", "p50_ms", "{:.2f}"),
              ("latency p99, ms (less is better)", "p99_ms", "{:.2f}")]
    colours = {"warren": "#2a6f97", "classic": "#c05a2a"}
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="720" height="260" '
             'font-family="sans-serif" font-size="12">',
             '<rect width="720" height="260" fill="white"/>']
    for k, (title, key, fmt) in enumerate(panels):
        x0 = 20 + k * 240
        parts.append(f'<text x="{x0}" y="20">{title}</text>')
        top = max(s["warren"][key], s["classic"][key], 1e-9)
        for j, chain in enumerate(("warren", "classic")):
            v = s[chain][key]
            h = 180 * v / top
            x = x0 + 20 + j * 90
            parts.append(f'<rect x="{x}" y="{220 - h:.1f}" width="60" height="{h:.1f}" '
                         f'fill="{colours[chain]}"/>')
            parts.append(f'<text x="{x}" y="{214 - h:.1f}">{fmt.format(v)}</text>')
            parts.append(f'<text x="{x}" y="238">{chain}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--drain", type=int, default=20_000)
    ap.add_argument("--latency", type=int, default=200)
    ap.add_argument("--steady", type=int, default=30, help="seconds of steady load")
    ap.add_argument("--rate", type=int, default=100, help="events/s of the steady load")
    ap.add_argument("--venv", default=os.environ.get("VENV", os.path.join(
        os.environ.get("BENCH_DIR", "/tmp/warren-bench"), "venv")),
        help="virtual environment with hared and mqttwarn")
    ap.add_argument("--out", default=None, help="results folder (default "
                    "bench/results/compare-<date>-<time>)")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny workload, to check that the script still works")
    ap.add_argument("--label", default="",
                    help="what the binaries in $BIN are (e.g. the commit they were built from)")
    wb.add_quiet_arg(ap)
    args = ap.parse_args()
    if args.smoke:
        global SETTLE
        args.rounds, args.drain, args.latency, args.steady = 1, 200, 10, 2
        args.no_wait_quiet = True
        SETTLE = 0.5
    for tool in ("hared", "mqttwarn"):
        if not os.access(os.path.join(args.venv, "bin", tool), os.X_OK):
            sys.exit(f"no {tool} in {args.venv}: run bench/compare.sh, or pass --venv")
    for tool in ("mosquitto", "mosquitto_pub", "gcc"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed")
    if not args.smoke:  # the smoke run (in the test suite) changes no machine setting
        wb.prepare(args)
    out = args.out or os.path.join(wb.ROOT, "bench", "results",
                                   time.strftime("compare-%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    d = wb.workdir("compare")
    exe = wb.flooder(d)
    rounds = []
    for r in range(args.rounds):
        order = ("warren", "classic") if r % 2 == 0 else ("classic", "warren")
        result = {}
        for name in order:
            cd = os.path.join(d, f"{name}-{r}")
            os.makedirs(cd)
            wb.log(f"round {r + 1}/{args.rounds}: {name}")
            chain = Warren(cd) if name == "warren" else Classic(cd, args.venv)
            result[name] = run_chain(chain, args, exe)
        rounds.append(result)
    s = summarize(rounds)
    commit = subprocess.run(["git", "-C", wb.ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    # `commit` is this script's checkout; the binaries may be others (`bin`, `label`).
    doc = {"commit": commit, "bin": wb.BIN, "label": args.label,
           "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
           "args": {k: v for k, v in vars(args).items() if k not in ("out",)},
           "rounds": rounds, "summary": s}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(doc, f, indent=2)
    chart(s, os.path.join(out, "chart.svg"))
    print(table(s, args))
    if args.smoke:
        shutil.rmtree(d, ignore_errors=True)
    wb.log(f"results in {out}" + ("" if args.smoke else f"; logs and files in {d}"))


if __name__ == "__main__":
    main()
