#!/usr/bin/env python3
"""Soak test: hours of steady logins through two edges and one hub, under faults.

Not part of CI or `cargo test`; run it by hand against release binaries:

    python3 bench/soak.py --hours 1              # the default length
    python3 bench/soak.py --minutes 4 --kill-every 60 --cut-every 45    # a quick check

Topology (all on 127.0.0.1, free ports, work dir under $BENCH_DIR, default /tmp/warren-bench):

    sender (this script, --rate events/s in total, alternating)
      ├─UDP─▶ edge1 ──TCP─▶ proxy1 ─┐
      └─UDP─▶ edge2 ──TCP─▶ proxy2 ─┴─▶ hub (embedded broker, mTLS) ─▶ file notifier out.log

Each edge has its own certificate (`hub pki issue edge1|edge2`) and its own queue dir. The
proxies are part of this script, so it can cut an edge's link to the hub.

Every event is a legacy datagram for user `u<n>`, n = 0, 1, 2, …: its event id differs from
every other, and the file notifier writes one line `soak u<n> id=… edge=…` per notification,
so the end check knows exactly which events arrived and how often.

Faults (after a warm-up, at random times from a seed printed at the start; `--seed` repeats a
schedule, as far as the timing of the daemons allows):
  - every ~--kill-every s: `kill -9` of the hub, edge1 or edge2, restarted (same config and
    state dir) after a random --down-min..--down-max s;
  - every ~--cut-every s: one proxy cuts its link for --cut-min..--cut-max s: it closes every
    proxied connection (RST) and refuses new ones (`--cut-mode close`, the default); `stall`
    freezes the open connections instead (no byte either way) and refuses new ones; `mixed`
    picks one of the two per cut.
  "~N s" means uniformly between N/2 and 3N/2.

An edge's kill -9 may lose datagrams it had not *accepted* yet (still in its UDP buffer or in
the group commit under way): UDP has no acknowledgement, and warren promises durability only
from acceptance on. The sender holds back while the kill happens, reads the edge's `accepted`
counter just before the kill, and since the edge accepts in arrival order, the events sent to
that edge process beyond that count are "at risk". An at-risk event that never arrives is
reported as "lost before acceptance", not as missing. While an edge is down its share goes to
the other edge.

Sampled every --sample-every s into samples.csv: each daemon's pid, RSS, open fds, threads,
CPU seconds; edge queue depth and in-flight; hub outbox, received and duplicates; the disk
use (allocated blocks, like `du`) of each queue dir, the hub's inbox dir and the notifier file.

At the end the sender stops, every link is restored, and the script waits (at most
--drain-timeout s) until both edges' queues are empty, the hub's outbox is empty and the
notifier file has stopped growing; then it stops the daemons (SIGTERM) and counts the lines.

Result (printed, and in $OUT or $BENCH_DIR/results, directory soak-<date>-<time>/):
  summary.json  everything below, plus the missing and duplicated events (first 200)
  samples.csv   the periodic samples
  faults.jsonl  one line per fault: when, what, and how long the edges took to link up again
Exit status: 0 when no accepted event is missing and no daemon exited on its own; 1 otherwise
(2 for a setup error). Duplicates do not fail the run: a hub killed between a notifier's
write and its durable record writes that line again after the restart (at most one per
notifier per hub crash, docs/DESIGN.md, guarantee 3), so they are reported next to the number
of hub kills.

Binaries: $BIN (default target/release), copied into the work dir first so that a rebuild
during the soak cannot swap the binary a restart runs. Python 3.8+, standard library only.
"""

import argparse
import array
import asyncio
import csv
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wb  # noqa: E402

EDGES = ("edge1", "edge2")
# The route's format; the end check parses the user (event number) and edge out of it.
LINE_FORMAT = "soak {user} id={id} edge={edge}"
LINE_RE = re.compile(rb"^soak u(\d+) id=(\S*) edge=(\S*)$")


def now_ms():
    return int(time.time() * 1000)


def stamp(t=None):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t or time.time()))


# --- configuration -----------------------------------------------------------------------

def write_hub_config(d, tls_port, pki):
    """The hub: embedded broker with mTLS on tls_port, one file notifier fed by one route for
    logins. Presence events (edge_offline/online) exist but go nowhere: they would be lines
    that are not the sender's events."""
    os.makedirs(d, exist_ok=True)
    text = f"""state_dir = "{d}/state"
shutdown_grace = "5s"
[broker]
listen_tls = "127.0.0.1:{tls_port}"
cert_file = "{pki}/hub.pem"
key_file = "{pki}/hub.key"
client_ca_file = "{pki}/ca.pem"
[notifier.out]
type = "file"
path = "{d}/out.log"
[[route]]
match = {{ kind = "login" }}
notify = ["out"]
format = "{LINE_FORMAT}"
"""
    path = os.path.join(d, "hub.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def write_edge_config(d, name, udp_port, proxy_port, pki, max_backoff):
    """An edge with its own state dir and certificate, whose hub is the proxy's port. The
    name `localhost` is what the hub certificate from `hub pki init` is valid for."""
    os.makedirs(d, exist_ok=True)
    text = f"""site = "soak"
edge_id = "{name}"
state_dir = "{d}/state"
shutdown_grace = "5s"
[ingest]
listen = ["127.0.0.1:{udp_port}"]
recv_buffer_bytes = 1048576
[hub]
address = "localhost:{proxy_port}"
ca_file = "{pki}/ca.pem"
cert_file = "{pki}/{name}.pem"
key_file = "{pki}/{name}.key"
max_backoff = "{max_backoff}"
"""
    path = os.path.join(d, "edge.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def private_binaries(d):
    """Copies edge and hub out of $BIN: every restart then runs the same binary even if
    someone rebuilds target/release meanwhile. Returns {name: description} for the result."""
    os.makedirs(d, exist_ok=True)
    info = {}
    for name in ("edge", "hub"):
        src = os.path.join(wb.BIN, name)
        dst = os.path.join(d, name)
        shutil.copy2(src, dst)
        with open(dst, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        st = os.stat(src)
        info[name] = dict(source=src, size=st.st_size, mtime=stamp(st.st_mtime), sha256=digest)
    wb.EDGE, wb.HUB = os.path.join(d, "edge"), os.path.join(d, "hub")
    return info


# --- daemons -----------------------------------------------------------------------------

class Daemon:
    """One edge or the hub: started, killed with SIGKILL and restarted on the same config
    and state dir. Processes go through wb.Procs, so they are killed on every exit path."""

    def __init__(self, name, exe, config, sock, logfile):
        self.name, self.exe, self.config, self.sock, self.logfile = name, exe, config, sock, logfile
        self.proc = None
        self.starts = 0
        self.killed = 0
        self.status_max_s = 0.0     # slowest status answer, a sign of a stuck runtime
        self.status_slow = 0        # answers that took over a second, or none in time

    def start(self, timeout=120):
        with open(self.logfile, "a") as f:  # so the log shows where each process begins
            f.write(f"=== soak.py: start #{self.starts + 1} at {stamp()} ===\n")
        self.proc = wb.Procs.spawn(self.name, [self.exe, "run", "--config", self.config],
                                   self.logfile)
        self.starts += 1
        t0 = time.time()
        wb.wait_status(self.sock, self.proc, timeout)
        return time.time() - t0

    def kill9(self):
        """SIGKILL, reaped, forgotten by wb.Procs (it must not be signalled again)."""
        self.proc.kill()
        self.proc.wait(10)
        if self.proc in wb.Procs.procs:
            wb.Procs.procs.remove(self.proc)
        self.killed += 1

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def status(self, timeout=5):
        """The status JSON, or None if the daemon does not answer (down, restarting). Times
        the answers of a live daemon."""
        t0 = time.monotonic()
        try:
            return wb.status(self.sock, timeout=timeout)
        except (OSError, ValueError):
            return None
        finally:
            took = time.monotonic() - t0
            if self.alive():
                self.status_max_s = max(self.status_max_s, took)
                if took > 1:
                    self.status_slow += 1
                    wb.log(f"{self.name} status took {took:.2f}s")


# --- the sender --------------------------------------------------------------------------

class Sender(threading.Thread):
    """Sends legacy datagrams for users u0, u1, … at `rate` per second in total, alternating
    between the live edges, on an absolute schedule (a late slot is made up at once, so the
    average rate holds). Remembers which event numbers went to each edge process, to know
    which ones an edge kill may legitimately lose."""

    def __init__(self, rate, ports):
        super().__init__(name="sender", daemon=True)
        self.rate = rate
        self.ports = dict(ports)                 # edge name -> UDP port
        self.live = {e: True for e in ports}
        self.sent_to = {e: array.array("q") for e in ports}   # this incarnation's events
        self.total_to = {e: 0 for e in ports}
        self.at_risk = set()                     # events an edge kill may have lost
        self.lock = threading.Lock()             # held by a kill, so no send races it
        self.stop_event = threading.Event()
        self.sent = 0
        self.send_errors = 0
        self.t0 = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def datagram(self, n):
        return json.dumps({"tst": int(time.time()), "hostname": "soak", "user": f"u{n}",
                           "service": "sshd", "rhost": "192.0.2.10", "tty": "ssh"},
                          separators=(",", ":")).encode()

    def pick(self, n):
        """Even events to edge1, odd to edge2; a down edge's share goes to the other."""
        names = list(self.ports)
        first = names[n % len(names)]
        if self.live[first]:
            return first
        return next((e for e in names if self.live[e]), None)

    def run(self):
        self.t0 = time.monotonic()
        n = 0
        while not self.stop_event.is_set():
            due = self.t0 + n / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                self.stop_event.wait(wait)
                continue
            with self.lock:
                edge = self.pick(n)
                if edge is None:  # never expected: kills are one at a time
                    time.sleep(0.05)
                    continue
                try:
                    self.sock.sendto(self.datagram(n), ("127.0.0.1", self.ports[edge]))
                except OSError:
                    self.send_errors += 1
                    time.sleep(0.01)
                    continue  # same n again: every number is sent exactly once
                self.sent_to[edge].append(n)
                self.total_to[edge] += 1
                n += 1
                self.sent = n

    def retire(self, edge, accepted):
        """Call with `lock` held, right after the edge's process died: its events past the
        first `accepted` may not have been accepted. Returns (sent to it, at risk)."""
        events = self.sent_to[edge]
        risky = events[accepted:]
        self.at_risk.update(risky)
        self.live[edge] = False
        self.sent_to[edge] = array.array("q")
        return len(events), len(risky)

    def revive(self, edge):
        with self.lock:
            self.live[edge] = True

    def finish(self):
        self.stop_event.set()
        self.join(10)
        return self.sent


# --- the link proxies --------------------------------------------------------------------

class ProxyLoop:
    """An asyncio loop on its own thread, hosting the proxies; the main thread calls into it
    with `call` (the rest of the script stays plain sequential code)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="proxies", daemon=True).start()

    def call(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class LinkProxy:
    """127.0.0.1:port -> 127.0.0.1:upstream, byte for byte (TLS passes through untouched).
    `cut` takes the link down for a while; it comes back by itself."""

    def __init__(self, name, upstream):
        self.name, self.upstream = name, upstream
        self.port = wb.free_port()
        self.server = None
        self.conns = set()          # (client transport, upstream transport)
        self.gate = None            # cleared while a stall holds every byte
        self.restore_task = None
        self.cut_since = None       # ms, while cut
        self.cut_mode = None
        self.restored_ms = None     # end of the last cut
        self.accepted = 0
        self.upstream_failed = 0

    async def start(self):
        self.gate = asyncio.Event()
        self.gate.set()
        await self._listen()

    async def _listen(self):
        # reuse_address: the port is ours again right after a cut closed it
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                 reuse_address=True)

    async def _handle(self, c_reader, c_writer):
        self.accepted += 1
        try:
            u_reader, u_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.upstream), 5)
        except (OSError, asyncio.TimeoutError):
            self.upstream_failed += 1  # the hub is down: the edge sees its link drop
            c_writer.transport.abort()
            return
        pair = (c_writer.transport, u_writer.transport)
        if self.cut_since is not None and self.cut_mode == "close":
            for transport in pair:  # connected just as the cut began
                transport.abort()
            return
        self.conns.add(pair)
        try:
            await asyncio.gather(self._pipe(c_reader, u_writer), self._pipe(u_reader, c_writer))
        finally:
            self.conns.discard(pair)

    async def _pipe(self, reader, writer):
        """Copies one direction until EOF or error, then closes the other side, which ends the
        opposite pipe too. The gate stops both reading and writing during a stall."""
        try:
            while True:
                await self.gate.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self.gate.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def cut(self, seconds, mode):
        """Closes the listener (new connections are refused) and either aborts every open
        connection (`close`: RST both ways) or freezes them (`stall`). Restores after
        `seconds`."""
        if self.cut_since is not None:
            return False
        self.cut_since, self.cut_mode = now_ms(), mode
        self.server.close()  # not wait_closed(): from 3.12 on it waits for the connections
        if mode == "close":
            for pair in list(self.conns):
                for transport in pair:
                    transport.abort()
        else:
            self.gate.clear()
        self.restore_task = asyncio.ensure_future(self._restore_later(seconds))
        return True

    async def _restore_later(self, seconds):
        await asyncio.sleep(seconds)
        await self.restore()

    async def restore(self):
        if self.cut_since is None:
            return
        if self.restore_task is not None and self.restore_task is not asyncio.current_task():
            self.restore_task.cancel()
        self.restore_task = None
        await self._listen()
        self.gate.set()
        self.cut_since = None
        self.restored_ms = now_ms()


# --- sampling ----------------------------------------------------------------------------

def proc_stats(pid):
    """(RSS KiB, open fds, threads, CPU s) from /proc, or Nones if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        rss = int(fields["VmRSS"].split()[0])
        threads = int(fields["Threads"])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, fds, threads, round(wb.proc_cpu_seconds(pid), 2)
    except (OSError, KeyError, ValueError):
        return None, None, None, None


def disk_use(path):
    """Allocated bytes under path, as `du` counts them (sled preallocates and never shrinks,
    so the apparent size would say less about the disk)."""
    total = 0
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:  # sled replaces files as it goes
                pass
    return total


class LineCounter:
    """Counts the notifier file's lines incrementally (reads only what was appended)."""

    def __init__(self, path):
        self.path, self.offset, self.lines = path, 0, 0

    def count(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.lines
        # only whole lines: a line being written counts next time
        end = data.rfind(b"\n") + 1
        self.lines += data.count(b"\n", 0, end)
        self.offset += end
        return self.lines


class Sampler:
    """One CSV row per sample; keeps the rows for the summary."""

    def __init__(self, path, daemons, dirs, sender, lines):
        self.daemons, self.dirs, self.sender, self.lines = daemons, dirs, sender, lines
        self.rows = []
        self.fields = ["time", "elapsed_s", "phase", "sent", "lines"]
        for name in daemons:
            self.fields += [f"{name}_{k}" for k in ("pid", "rss_kib", "fds", "threads", "cpu_s")]
        for name in EDGES:
            self.fields += [f"{name}_depth", f"{name}_in_flight", f"{name}_link"]
        self.fields += ["hub_outbox", "hub_received", "hub_duplicates"]
        self.fields += [f"disk_{k}" for k in dirs]
        self.file = open(path, "w", newline="")
        self.csv = csv.DictWriter(self.file, fieldnames=self.fields)
        self.csv.writeheader()
        self.t0 = time.time()

    def sample(self, phase):
        row = dict(time=stamp(), elapsed_s=round(time.time() - self.t0, 1), phase=phase,
                   sent=self.sender.sent, lines=self.lines.count())
        for name, d in self.daemons.items():
            pid = d.proc.pid if d.alive() else None
            stats = proc_stats(pid) if pid else (None,) * 4
            row[f"{name}_pid"] = pid
            for k, v in zip(("rss_kib", "fds", "threads", "cpu_s"), stats):
                row[f"{name}_{k}"] = v
            st = d.status(timeout=2) if pid else None
            if st and name in EDGES:
                row[f"{name}_depth"] = st["queue_depth"]
                row[f"{name}_in_flight"] = st["in_flight"]
                row[f"{name}_link"] = int(st["link"]["connected"])
            elif st:
                out = st["notifiers"].get("out", {})
                row["hub_outbox"] = out.get("outbox")
                row["hub_received"] = st["received"]
                row["hub_duplicates"] = st["duplicates"]
        for k, path in self.dirs.items():
            row[f"disk_{k}"] = disk_use(path)
        self.csv.writerow(row)
        self.file.flush()  # a soak stopped half-way still leaves its samples
        self.rows.append(row)
        return row


# --- faults ------------------------------------------------------------------------------

class FaultLog:
    """Faults as they happen: printed, appended to faults.jsonl, kept for the summary."""

    def __init__(self, path, t0):
        self.path, self.t0, self.items = path, t0, []

    def add(self, **fault):
        fault = dict(time=stamp(), elapsed_s=round(time.time() - self.t0, 1), **fault)
        self.items.append(fault)
        self._write(fault)
        wb.log("FAULT " + " ".join(f"{k}={v}" for k, v in fault.items()
                                   if k not in ("time", "elapsed_s")))
        return fault

    def update(self, fault, **more):
        """Adds what was learnt later (relink times) as a line of its own."""
        fault.update(more)
        self._write(dict(update_of=fault["elapsed_s"], kind=fault["kind"],
                         target=fault["target"], **more))

    def _write(self, item):
        with open(self.path, "a") as f:
            f.write(json.dumps(item) + "\n")


def jitter(rng, mean):
    """Uniform between mean/2 and 3*mean/2: regular on average, never in lock step."""
    return rng.uniform(0.5 * mean, 1.5 * mean)


class Soak:
    """The run: set-up, the main loop (faults, samples, watching), drain, check."""

    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.failures = []             # reasons the run fails besides missing events
        self.pending_restart = {}      # daemon name -> monotonic time to restart it
        self.pending_relink = []       # (fault, edges still to link up, after_ms, proxy)
        self.last_accepted = {e: 0 for e in EDGES}  # this incarnation, from the last poll

    # set-up ----------------------------------------------------------------------------

    def setup(self):
        a = self.args
        self.dir = wb.workdir("soak")
        base = os.environ.get("OUT") or os.path.join(
            os.environ.get("BENCH_DIR", "/tmp/warren-bench"), "results")
        self.results = a.results or os.path.join(base, "soak-" + time.strftime("%Y%m%d-%H%M%S"))
        os.makedirs(self.results, exist_ok=True)
        self.binaries = private_binaries(os.path.join(self.dir, "bin"))
        pki = wb.pki(os.path.join(self.dir, "pki"), edges=EDGES)
        hub_port = wb.free_port()
        hub_dir = os.path.join(self.dir, "hub")
        self.out = os.path.join(hub_dir, "out.log")
        self.daemons = {"hub": Daemon("hub", wb.HUB, write_hub_config(hub_dir, hub_port, pki),
                                      os.path.join(hub_dir, "state", "hub.sock"),
                                      os.path.join(self.dir, "hub.log"))}
        self.proxy_loop = ProxyLoop()
        self.proxies, ports = {}, {}
        for name in EDGES:
            proxy = LinkProxy(name, hub_port)
            self.proxy_loop.call(proxy.start())
            self.proxies[name] = proxy
            ports[name] = wb.free_port(socket.SOCK_DGRAM)
            d = os.path.join(self.dir, name)
            cfg = write_edge_config(d, name, ports[name], proxy.port, pki, a.edge_max_backoff)
            self.daemons[name] = Daemon(name, wb.EDGE, cfg, os.path.join(d, "state", "edge.sock"),
                                        os.path.join(self.dir, f"{name}.log"))
        self.dirs = {"edge1_queue": os.path.join(self.dir, "edge1", "state", "queue"),
                     "edge2_queue": os.path.join(self.dir, "edge2", "state", "queue"),
                     "hub_inbox": os.path.join(hub_dir, "state", "inbox"),
                     "notifier_file": self.out}
        self.sender = Sender(a.rate, ports)
        self.lines = LineCounter(self.out)
        self.t_start = time.time()
        self.faults = FaultLog(os.path.join(self.results, "faults.jsonl"), self.t_start)
        self.sampler = Sampler(os.path.join(self.results, "samples.csv"), self.daemons,
                               self.dirs, self.sender, self.lines)
        wb.log(f"work dir {self.dir}; results in {self.results}")
        for name in ("hub",) + EDGES:
            self.daemons[name].start()
        self.wait_linked(EDGES, timeout=60)

    def wait_linked(self, edges, timeout):
        deadline = time.time() + timeout
        for name in edges:
            while time.time() < deadline:
                st = self.daemons[name].status()
                if st and st["link"]["connected"]:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError(f"{name} did not link up to the hub in {timeout}s")

    # the main loop ---------------------------------------------------------------------

    def run(self):
        a = self.args
        duration = a.minutes * 60 if a.minutes is not None else a.hours * 3600
        self.duration = duration
        warmup = min(a.warmup, duration / 4)
        t = time.monotonic()
        end, warm_end = t + duration, t + warmup
        next_sample = t
        next_kill = warm_end + jitter(self.rng, a.kill_every) if a.kill_every > 0 else None
        next_cut = warm_end + jitter(self.rng, a.cut_every) if a.cut_every > 0 else None
        self.sender.start()
        wb.log(f"sending {a.rate}/s for {duration:.0f}s; warm-up {warmup:.0f}s, then faults")
        last_progress = t
        while (t := time.monotonic()) < end:
            phase = "warmup" if t < warm_end else "soak"
            self.watch()
            if t >= next_sample:
                self.sampler.sample(phase)
                next_sample += a.sample_every
            if next_kill is not None and t >= next_kill and not self.pending_restart:
                self.kill(self.rng.choice(a.kill_targets))
                next_kill = t + jitter(self.rng, a.kill_every)
            if next_cut is not None and t >= next_cut:
                self.cut(self.rng.choice(EDGES))
                next_cut = t + jitter(self.rng, a.cut_every)
            if t - last_progress >= 60:
                last_progress = t
                self.progress()
            took = time.monotonic() - t
            if took > 3:  # a restart takes about a second; more means something waited
                wb.log(f"main loop step took {took:.1f}s")
            time.sleep(0.5)

    def progress(self):
        r = self.sampler.rows[-1] if self.sampler.rows else {}
        wb.log(f"sent {self.sender.sent} lines {self.lines.count()} depth "
               f"{r.get('edge1_depth')}/{r.get('edge2_depth')} outbox {r.get('hub_outbox')} "
               f"RSS hub/edge1/edge2 {r.get('hub_rss_kib')}/{r.get('edge1_rss_kib')}/"
               f"{r.get('edge2_rss_kib')} KiB")

    def watch(self):
        """Restarts what is due, notices daemons that died on their own, records relinks."""
        for name, at in list(self.pending_restart.items()):
            if time.monotonic() >= at:
                self.restart(name)
        for name, d in self.daemons.items():
            if name not in self.pending_restart and not d.alive():
                self.unexpected_exit(name)
        for name in EDGES:
            st = self.daemons[name].status(timeout=2) if name not in self.pending_restart else None
            if st:
                self.last_accepted[name] = st["counters"]["accepted"]
        self.check_relinks()

    def kill(self, name):
        """kill -9; the restart happens in `watch` after a random downtime."""
        d = self.daemons[name]
        fault = dict(kind="kill", target=name, pid=d.proc.pid)
        if name in EDGES:
            # The edge accepts in arrival order, so the events sent to it past its `accepted`
            # count read here may still be in its socket buffer or commit when it dies. The
            # sender keeps going while we read (the kill is hot); it waits only from the kill
            # until its choice of edge no longer includes this one.
            st = d.status(timeout=2)
            accepted = st["counters"]["accepted"] if st else self.last_accepted[name]
            with self.sender.lock:
                d.kill9()
                sent, risky = self.sender.retire(name, accepted)
            fault.update(queue_depth=(st or {}).get("queue_depth"), sent_to_process=sent,
                         accepted=accepted, at_risk=risky)
        else:
            st = d.status(timeout=2) or {}
            out = st.get("notifiers", {}).get("out", {})
            d.kill9()
            fault.update(received=st.get("received"), outbox=out.get("outbox"),
                         delivered=out.get("delivered"))
        down = self.rng.uniform(self.args.down_min, self.args.down_max)
        fault["down_s"] = round(down, 1)
        self.pending_restart[name] = time.monotonic() + down
        kill_ms = now_ms()
        fault = self.faults.add(**fault)
        fault["_mono"] = time.monotonic()  # for matching duplicates to hub kills
        relink = list(EDGES) if name == "hub" else [name]
        self.supersede(relink)
        self.pending_relink.append((fault, relink, kill_ms, None))

    def restart(self, name):
        d = self.daemons[name]
        try:
            took = d.start()
        except RuntimeError as e:  # a daemon that cannot come back is a finding, not a crash
            self.faults.add(kind="restart_failed", target=name, error=str(e))
            self.failures.append(f"{name} failed to restart: {e}")
            if d.alive():
                wb.Procs.stop(d.proc)
            self.pending_restart[name] = time.monotonic() + 10
            return
        del self.pending_restart[name]
        if name in EDGES:
            self.last_accepted[name] = 0
            self.sender.revive(name)
        wb.log(f"{name} restarted (pid {d.proc.pid}), status answered after {took:.2f}s")

    def unexpected_exit(self, name):
        """A daemon died without our kill: a finding. Restart it so the soak goes on."""
        d = self.daemons[name]
        rc = d.proc.returncode
        if d.proc in wb.Procs.procs:
            wb.Procs.procs.remove(d.proc)
        fault = dict(kind="unexpected_exit", target=name, pid=d.proc.pid, returncode=rc)
        if name in EDGES:
            with self.sender.lock:
                sent, risky = self.sender.retire(name, self.last_accepted[name])
            fault.update(sent_to_process=sent, at_risk=risky)
        self.faults.add(**fault)
        self.failures.append(f"{name} exited on its own (code {rc}); see {d.logfile}")
        self.pending_restart[name] = time.monotonic()

    def cut(self, name):
        mode = self.args.cut_mode
        if mode == "mixed":
            mode = self.rng.choice(("close", "stall"))
        seconds = self.rng.uniform(self.args.cut_min, self.args.cut_max)
        proxy = self.proxies[name]
        if not self.proxy_loop.call(proxy.cut(seconds, mode)):
            return  # still cut from last time
        fault = self.faults.add(kind=f"cut_{mode}", target=name, cut_s=round(seconds, 1))
        self.supersede([name])
        self.pending_relink.append((fault, [name], proxy.cut_since, proxy))

    def supersede(self, edges):
        """A new fault on an edge ends the wait for its relink after an earlier one: the
        time measured would be the new fault's."""
        for fault, left, _after, _proxy in self.pending_relink:
            for name in [n for n in left if n in edges]:
                self.faults.update(fault, **{f"{name}_relink_s": "superseded"})
                left.remove(name)
        self.pending_relink = [p for p in self.pending_relink if p[1]]

    def check_relinks(self):
        """For each recent fault, when each affected edge had its link up again (link.since
        after the fault). A stalled connection that survived counts as `kept`."""
        still = []
        for fault, edges, after_ms, proxy in self.pending_relink:
            left = []
            for name in edges:
                if name in self.pending_restart:
                    left.append(name)
                    continue
                st = self.daemons[name].status(timeout=2)
                link = st["link"] if st else {}
                cut_over = proxy is None or proxy.cut_since is None
                if link.get("connected") and link["since_ms"] >= after_ms:
                    secs = round((link["since_ms"] - after_ms) / 1000, 2)
                    self.faults.update(fault, **{f"{name}_relink_s": secs})
                elif link.get("connected") and cut_over and proxy is not None:
                    self.faults.update(fault, **{f"{name}_relink_s": "kept"})
                elif now_ms() - after_ms > 300_000:
                    self.faults.update(fault, **{f"{name}_relink_s": "none in 300 s"})
                    wb.log(f"WARNING: {name} has not linked up 300 s after {fault['kind']}")
                else:
                    left.append(name)
            if left:
                still.append((fault, left, after_ms, proxy))
        self.pending_relink = still

    # the end ---------------------------------------------------------------------------

    def drain(self):
        """Stops sending and faults; restores links and daemons; waits until the queues and
        the outbox are empty and the file has not grown for --settle s."""
        sent = self.sender.finish()
        wb.log(f"sender stopped after {sent} events; draining (at most "
               f"{self.args.drain_timeout:.0f}s)")
        for name in list(self.pending_restart):
            self.restart(name)
        for proxy in self.proxies.values():
            self.proxy_loop.call(proxy.restore())
        t0 = time.time()
        deadline = t0 + self.args.drain_timeout
        last_lines, last_change = -1, t0
        next_sample = next_print = t0
        state = {}
        while time.time() < deadline:
            self.watch()
            if time.time() >= next_sample:
                self.sampler.sample("drain")
                next_sample += self.args.sample_every
            lines = self.lines.count()
            if lines != last_lines:
                last_lines, last_change = lines, time.time()
            state = {n: self.daemons[n].status(timeout=2) or {} for n in self.daemons}
            depths = [state[e].get("queue_depth") for e in EDGES]
            outbox = state["hub"].get("notifiers", {}).get("out", {}).get("outbox")
            settled = time.time() - last_change >= self.args.settle
            if depths == [0, 0] and outbox == 0 and settled:
                took = last_change - t0
                wb.log(f"drained: queues and outbox empty, {lines} lines, file unchanged "
                       f"since {took:.1f}s after the sender stopped")
                return dict(drained=True, seconds=round(took, 1))
            if time.time() >= next_print:
                next_print += 10
                wb.log(f"  draining: depth {depths} outbox {outbox} lines {lines}")
            time.sleep(1)
        wb.log(f"NOT drained after {self.args.drain_timeout:.0f}s: "
               + json.dumps({n: {k: s.get(k) for k in ("queue_depth", "in_flight", "link")}
                             for n, s in state.items() if n in EDGES}))
        self.failures.append("not drained within --drain-timeout")
        return dict(drained=False, seconds=None)

    def stop_daemons(self):
        """SIGTERM each daemon; a clean exit (0) within its grace is part of the result."""
        codes = {}
        for name in ("edge1", "edge2", "hub"):
            d = self.daemons[name]
            if d.alive():
                t0 = time.time()
                wb.Procs.stop(d.proc, grace=30)
                codes[name] = dict(code=d.proc.returncode, seconds=round(time.time() - t0, 2))
        return codes


def check_output(path, sent, at_risk, rate, hub_kill_times):
    """Counts each event's lines in the notifier file. Returns the check's result."""
    counts = bytearray(sent)      # times each u<n> was written (saturates at 255)
    edges_of = {}                 # n -> edges that wrote it, for duplicates only
    unknown, unknown_examples = 0, []
    with open(path, "rb") as f:
        for line in f:
            m = LINE_RE.match(line.rstrip(b"\n"))
            n = int(m.group(1)) if m else -1
            if not 0 <= n < sent:
                unknown += 1
                if len(unknown_examples) < 5:
                    unknown_examples.append(line[:200].decode(errors="replace"))
                continue
            if counts[n] < 255:
                counts[n] += 1
            if counts[n] > 1:
                edges_of.setdefault(n, []).append(m.group(3).decode())
    absent = [n for n in range(sent) if counts[n] == 0]
    lost_risky = [n for n in absent if n in at_risk]
    missing = [n for n in absent if n not in at_risk]
    dups = [n for n in range(sent) if counts[n] > 1]

    def dup_info(n):
        # when it was sent (from its number), and the hub kill closest after that
        t = round(n / rate, 1)
        after = [round(k - t, 1) for k in hub_kill_times if k >= t]
        return dict(event=f"u{n}", count=counts[n], sent_at_s=t,
                    next_hub_kill_after_s=after[0] if after else None,
                    repeated_by=edges_of.get(n))

    return dict(
        sent=sent, lines=sum(counts) + unknown, unique=sent - len(absent),
        missing=len(missing), missing_events=[f"u{n}" for n in missing[:200]],
        at_risk=len(at_risk), lost_before_acceptance=len(lost_risky),
        lost_before_acceptance_events=[f"u{n}" for n in lost_risky[:200]],
        duplicated_events=len(dups), duplicate_lines=sum(counts[n] - 1 for n in dups),
        duplicates=[dup_info(n) for n in dups[:200]],
        unknown_lines=unknown, unknown_examples=unknown_examples)


# --- the summary -------------------------------------------------------------------------

def series(rows, key):
    return [(r["phase"], r[key]) for r in rows if r.get(key) is not None]


def start_end_max(rows, key):
    """First value after the warm-up, last value, max over the whole run."""
    vals = series(rows, key)
    if not vals:
        return None, None, None
    soak = [v for p, v in vals if p != "warmup"] or [v for _p, v in vals]
    return soak[0], vals[-1][1], max(v for _p, v in vals)


def resource_summary(rows, daemons, dirs):
    procs = {}
    for name, d in daemons.items():
        rss = start_end_max(rows, f"{name}_rss_kib")
        fds = start_end_max(rows, f"{name}_fds")
        thr = start_end_max(rows, f"{name}_threads")
        procs[name] = dict(rss_kib=dict(zip(("start", "end", "max"), rss)),
                           fds=dict(zip(("start", "end", "max"), fds)),
                           threads=dict(zip(("start", "end", "max"), thr)),
                           starts=d.starts, kill9=d.killed,
                           status_max_s=round(d.status_max_s, 3), status_slow=d.status_slow)
    disk = {}
    for k in dirs:
        s, e, m = start_end_max(rows, f"disk_{k}")
        disk[k] = dict(start=s, end=e, max=m)
    depth = {e: max((v for _p, v in series(rows, f"{e}_depth")), default=None) for e in EDGES}
    return procs, disk, depth


def fault_summary(faults):
    kinds = {}
    for f in faults:
        key = f"{f['kind']} {f['target']}"
        kinds[key] = kinds.get(key, 0) + 1
    relinks, other = {}, {}
    for f in faults:
        for k, v in f.items():
            if not k.endswith("_relink_s"):
                continue
            key = f"{f['kind']} {f['target']}"
            if isinstance(v, (int, float)):
                relinks.setdefault(key, []).append(v)
            else:  # kept (a stall the connection survived), superseded, none in 300 s
                other.setdefault(key, {}).setdefault(v, 0)
                other[key][v] += 1
    out = {}
    for key in set(relinks) | set(other):
        v = relinks.get(key, [])
        out[key] = dict(n=len(v), median=round(statistics.median(v), 2) if v else None,
                        max=max(v) if v else None, other=other.get(key, {}))
    return kinds, out


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}{unit}"
    return f"{v:,}{unit}"


def mib(v):
    return None if v is None else round(v / 1048576, 1)


def kib_mib(v):
    return None if v is None else round(v / 1024, 1)


def print_table(s):
    """The human summary; Markdown tables so it pastes into the README or an issue."""
    c, a = s["check"], s["args"]
    out = [
        f"soak: {s['sending_s'] / 60:.1f} min at {a['rate']:g}/s ({s['duration_s'] / 60:.1f} min "
        f"in all), seed {a['seed']}, commit "
        f"{s['commit']}, work dir {s['work_dir']}",
        f"events: sent {c['sent']:,} (edge1 {s['sent_to']['edge1']:,}, edge2 "
        f"{s['sent_to']['edge2']:,}); notifier lines {c['lines']:,}; drained "
        + (f"{s['drain']['seconds']} s after the sender stopped" if s["drain"]["drained"]
           else "NO"),
        "",
        "| check | count |", "|---|---|",
        f"| missing (sent, never notified) | {c['missing']:,} |",
        f"| lost before acceptance (edge killed; at risk {c['at_risk']:,}) | "
        f"{c['lost_before_acceptance']:,} |",
        f"| duplicate lines (events repeated: {c['duplicated_events']:,}) | "
        f"{c['duplicate_lines']:,} |",
        f"| hub kills (allow at most one duplicate each) | {s['hub_kills']} |",
        f"| lines that are no sent event | {c['unknown_lines']:,} |",
        "",
        "| fault | count | edge linked up again after: median / max (s) |", "|---|---|---|",
    ]
    for kind, n in sorted(s["faults"].items()):
        rl = s["relink"].get(kind)
        text = "-"
        if rl:
            text = f"{rl['median']} / {rl['max']} (n={rl['n']})" if rl["n"] else ""
            text += "".join(f"; {k}: {v}" for k, v in sorted(rl["other"].items()))
        out.append(f"| {kind} | {n} | {text.lstrip('; ')} |")
    out += ["", "| process | RSS start / end / max (MiB) | fds start / end / max | "
                "threads start / end / max | starts | slowest status answer |",
            "|---|---|---|---|---|---|"]
    for name, p in s["processes"].items():
        r, f, t = p["rss_kib"], p["fds"], p["threads"]
        out.append(f"| {name} | {fmt(kib_mib(r['start']))} / {fmt(kib_mib(r['end']))} / "
                   f"{fmt(kib_mib(r['max']))} | {fmt(f['start'])} / "
                   f"{fmt(f['end'])} / {fmt(f['max'])} | {fmt(t['start'])} / {fmt(t['end'])} / "
                   f"{fmt(t['max'])} | {p['starts']} | {p['status_max_s']} s |")
    out += ["", "| disk (MiB) | start | end | max |", "|---|---|---|---|"]
    for k, d in s["disk"].items():
        out.append(f"| {k} | {fmt(mib(d['start']))} | {fmt(mib(d['end']))} | "
                   f"{fmt(mib(d['max']))} |")
    out.append("")
    out.append(f"max queue depth: edge1 {fmt(s['max_queue_depth']['edge1'])}, edge2 "
               f"{fmt(s['max_queue_depth']['edge2'])}; stop: "
               + ", ".join(f"{k} exit {v['code']} in {v['seconds']} s"
                           for k, v in s["stop"].items()))
    if s["failures"]:
        out.append("FAILURES: " + "; ".join(s["failures"]))
    out.append(f"RESULT {'FAIL' if s['failed'] else 'PASS'}: {c['missing']} missing, "
               f"{c['duplicate_lines']} duplicate lines with {s['hub_kills']} hub kills; "
               f"files in {s['results_dir']}")
    print("\n".join(out), flush=True)


def git_commit():
    try:
        # the binaries may come from a tree with changes: `-dirty` says the tree had some
        return subprocess.run(["git", "-C", wb.ROOT, "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# --- main --------------------------------------------------------------------------------

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--hours", type=float, default=1.0, help="length of the run (default 1)")
    length.add_argument("--minutes", type=float, help="length of the run, for short runs")
    ap.add_argument("--rate", type=float, default=100, help="events/s in total (default 100)")
    ap.add_argument("--seed", type=int, default=None, help="fault schedule seed (default random)")
    ap.add_argument("--warmup", type=float, default=60,
                    help="seconds before the first fault; the 'start' figures are taken after "
                    "it (at most a quarter of the run)")
    ap.add_argument("--kill-every", type=float, default=180,
                    help="mean seconds between kill -9s (0: none)")
    ap.add_argument("--kill-targets", default="hub,edge1,edge2",
                    help="comma-separated daemons to pick from")
    ap.add_argument("--down-min", type=float, default=0.5, help="least downtime after a kill")
    ap.add_argument("--down-max", type=float, default=5, help="most downtime after a kill")
    ap.add_argument("--cut-every", type=float, default=120,
                    help="mean seconds between link cuts (0: none)")
    ap.add_argument("--cut-min", type=float, default=2, help="shortest cut, seconds")
    ap.add_argument("--cut-max", type=float, default=10, help="longest cut, seconds")
    ap.add_argument("--cut-mode", default="close", choices=["close", "stall", "mixed"],
                    help="close: RST every connection; stall: freeze them; mixed: either")
    ap.add_argument("--edge-max-backoff", default="2s",
                    help="the edges' hub.max_backoff (the daemon's default is 60s)")
    ap.add_argument("--sample-every", type=float, default=10, help="seconds between samples")
    ap.add_argument("--drain-timeout", type=float, default=300,
                    help="bound on the wait for empty queues at the end, seconds")
    ap.add_argument("--settle", type=float, default=5,
                    help="seconds the notifier file must stay unchanged to count as done")
    ap.add_argument("--results", default=None,
                    help="results directory (default $OUT or $BENCH_DIR/results, "
                    "soak-<date>-<time>)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the queue and inbox databases and the copied binaries after a "
                    "passing run (a failing run keeps them anyway)")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 10**9)
    args.kill_targets = [t for t in args.kill_targets.split(",") if t]
    bad = [t for t in args.kill_targets if t not in ("hub",) + EDGES]
    if bad or not args.kill_targets or args.cut_min > args.cut_max \
            or args.down_min > args.down_max or args.rate <= 0:
        ap.error("bad --kill-targets, --cut-min/max, --down-min/max or --rate")
    return args


def main():
    args = parse_args()
    wb.log(f"soak seed {args.seed} (repeat the fault schedule with --seed {args.seed})")
    soak = Soak(args)
    try:
        soak.setup()
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        wb.log(f"setup failed: {e}")
        return 2
    soak.run()
    drain = soak.drain()
    soak.sampler.sample("end")
    stop = soak.stop_daemons()
    for name, v in stop.items():
        if v["code"] != 0:
            soak.failures.append(f"{name} exited {v['code']} on SIGTERM")
    # event n went out about n/rate s after the sender started: on that clock, the hub kills
    hub_kills = [f["_mono"] - soak.sender.t0 for f in soak.faults.items
                 if f["kind"] == "kill" and f["target"] == "hub"]
    check = check_output(soak.out, soak.sender.sent, soak.sender.at_risk, args.rate, hub_kills)
    procs, disk, depth = resource_summary(soak.sampler.rows, soak.daemons, soak.dirs)
    kinds, relink = fault_summary(soak.faults.items)
    failed = check["missing"] > 0 or bool(soak.failures)
    summary = dict(
        args=vars(args), commit=git_commit(), binaries=soak.binaries, work_dir=soak.dir,
        results_dir=soak.results, started=stamp(soak.t_start),
        duration_s=round(time.time() - soak.t_start), sending_s=soak.duration, sent_to=soak.sender.total_to,
        send_errors=soak.sender.send_errors, drain=drain, stop=stop, check=check,
        hub_kills=len(hub_kills), faults=kinds, relink=relink, processes=procs, disk=disk,
        max_queue_depth=depth,
        proxies={n: dict(connections=p.accepted, upstream_refused=p.upstream_failed)
                 for n, p in soak.proxies.items()},
        fault_log=[{k: v for k, v in f.items() if not k.startswith("_")}
                   for f in soak.faults.items],
        failures=soak.failures, failed=failed)
    with open(os.path.join(soak.results, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print_table(summary)
    if not failed and not args.keep:  # logs, configs and out.log stay
        for sub in ("edge1/state", "edge2/state", "hub/state", "bin"):
            shutil.rmtree(os.path.join(soak.dir, sub), ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
