"""Shared helpers for the warren benchmarks: start/stop edge and hub, read their status,
RSS, a free port, the C flooder. Loopback only; every process started here is tracked and
killed by `Procs.stop_all()` (also on exit and on SIGINT/SIGTERM).

Python 3.8+, standard library only.
"""

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "target", "release"))
EDGE = os.path.join(BIN, "edge")
HUB = os.path.join(BIN, "hub")
FLOOD_SRC = os.path.join(ROOT, "bench", "udpflood.c")


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


class Procs:
    """Processes this benchmark started (by pid), killed at the end."""

    procs = []

    @classmethod
    def spawn(cls, name, argv, logfile, env=None):
        out = open(logfile, "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        p.bench_name = name
        cls.procs.append(p)
        log(f"started {name} pid {p.pid}: {' '.join(argv)}")
        return p

    @classmethod
    def stop(cls, p, grace=15):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"{p.bench_name} pid {p.pid} ignored SIGTERM for {grace}s; SIGKILL")
                p.kill()
                p.wait(5)
        if p in cls.procs:
            cls.procs.remove(p)

    @classmethod
    def stop_all(cls):
        for p in list(cls.procs):
            try:
                cls.stop(p, grace=10)
            except Exception as e:  # noqa: BLE001 - best effort at exit
                print("stop failed:", e, file=sys.stderr)


atexit.register(Procs.stop_all)


def _on_signal(sig, _frame):
    Procs.stop_all()
    sys.exit(128 + sig)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    """Resident set size in KiB, as `ps -o rss= -p PID` reports it."""
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def status(sock, timeout=10):
    """The daemon's JSON snapshot, read straight from its status socket (what
    `edge status --socket S --json` / `hub status --socket S --json` print), without starting
    a process per poll."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock)
    # An empty request, as `edge status` sends: without it the daemon answers only after its
    # 1 s request timeout (daemon/src/control.rs), and every poll would take a second.
    s.shutdown(socket.SHUT_WR)
    chunks = []
    while True:
        b = s.recv(65536)
        if not b:
            break
        chunks.append(b)
    s.close()
    return json.loads(b"".join(chunks))


def wait_status(sock, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.bench_name} exited with {proc.returncode}")
        try:
            return status(sock)
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError(f"no status on {sock} after {timeout}s")


def flooder(workdir):
    """Compiles bench/udpflood.c once into workdir; returns the binary's path."""
    exe = os.path.join(workdir, "udpflood")
    if not os.path.exists(exe):
        subprocess.run(["gcc", "-O2", "-o", exe, FLOOD_SRC], check=True)
    return exe


def flood(exe, port, count, rate=0, first=0, tag="vm", host="127.0.0.1"):
    """Starts the flooder; returns the Popen (stdout is one summary line)."""
    return subprocess.Popen([exe, host, str(port), str(count), str(rate), str(first), tag],
                            stdout=subprocess.PIPE, text=True)


def udp_rcvbuf_errors():
    """Kernel-wide UDP receive-buffer drops (Udp: RcvbufErrors in /proc/net/snmp)."""
    with open("/proc/net/snmp") as f:
        lines = [l.split() for l in f if l.startswith("Udp:")]
    head, vals = lines[0], lines[1]
    return int(vals[head.index("RcvbufErrors")])


def set_rmem_max(value=67108864):
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            cur = int(f.read())
        if cur < value:
            subprocess.run(["sysctl", "-w", f"net.core.rmem_max={value}"], check=True,
                           capture_output=True)
        with open("/proc/sys/net/core/rmem_max") as f:
            return int(f.read())
    except (OSError, subprocess.CalledProcessError) as e:
        log(f"could not raise net.core.rmem_max: {e}")
        return None


# --- configs -------------------------------------------------------------------------------

def edge_config(d, udp_port, hub_addr="127.0.0.1:1", tls=None, edge_id="bench",
                recv_buffer=33554432, max_bytes=1 << 30, window=None):
    """Writes <d>/edge.toml; tls = None for plain TCP, else dict(ca=, cert=, key=)."""
    os.makedirs(d, exist_ok=True)
    lines = [
        f'site = "bench"',
        f'edge_id = "{edge_id}"',
        f'state_dir = "{d}/state"',
        f'shutdown_grace = "5s"',
        "[ingest]",
        f'listen = ["127.0.0.1:{udp_port}"]',
        f"recv_buffer_bytes = {recv_buffer}",
        "[queue]",
        f"max_bytes = {max_bytes}",
        "[hub]",
        f'address = "{hub_addr}"',
        'max_backoff = "2s"',
    ]
    if window:
        lines.append(f"window = {window}")
    if tls is None:
        lines.append("tls = false")
    else:
        lines += [f'ca_file = "{tls["ca"]}"', f'cert_file = "{tls["cert"]}"',
                  f'key_file = "{tls["key"]}"']
    path = os.path.join(d, "edge.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def hub_config(d, tls_port, pki, client_auth=True, notifier="file", max_connections=None,
               listen_local=None, web=False):
    """Writes <d>/hub.toml: embedded broker on 127.0.0.1:tls_port, one notifier, one route;
    with `web`, the page on a loopback port (so the hub keeps its recent events too)."""
    os.makedirs(d, exist_ok=True)
    broker = [
        f'listen_tls = "127.0.0.1:{tls_port}"',
        f'cert_file = "{pki}/hub.pem"',
        f'key_file = "{pki}/hub.key"',
        'handshake_timeout = "30s"',
    ]
    if client_auth:
        broker.append(f'client_ca_file = "{pki}/ca.pem"')
    if max_connections:
        broker.append(f"max_connections = {max_connections}")
    if listen_local:
        broker.append(f'listen_local = "127.0.0.1:{listen_local}"')
    if notifier == "file":
        notif = f'[notifier.out]\ntype = "file"\npath = "{d}/out.log"\n'
    else:
        notif = '[notifier.out]\ntype = "log"\n'
    text = f"""state_dir = "{d}/state"
shutdown_grace = "5s"
[broker]
{chr(10).join(broker)}
{notif}
[[route]]
match = {{ kind = "login" }}
notify = ["out"]
format = "User {{user}} logged into {{hostname}} from {{rhost}} at {{tstamp}}"
"""
    if web:
        text += '[web]\nlisten = "127.0.0.1:0"\n'
    path = os.path.join(d, "hub.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def pki(d, edges=("bench",)):
    """`hub pki init` + `hub pki issue` for each edge id; returns the directory."""
    if not os.path.exists(os.path.join(d, "ca.pem")):
        subprocess.run([HUB, "pki", "init", "--dir", d], check=True, capture_output=True)
    for e in edges:
        if not os.path.exists(os.path.join(d, f"{e}.pem")):
            subprocess.run([HUB, "pki", "issue", "--dir", d, e], check=True,
                           capture_output=True)
    return d


def workdir(name):
    base = os.environ.get("BENCH_DIR", "/tmp/warren-bench")
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{name}-", dir=base)


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def cpu_busy(interval=2.0):
    """Fraction of all CPUs busy over `interval` seconds (from /proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v), idle
    t0, i0 = snap()
    time.sleep(interval)
    t1, i1 = snap()
    return 1 - (i1 - i0) / max(t1 - t0, 1)


def add_quiet_arg(ap):
    """The --no-wait-quiet flag every timing script takes."""
    ap.add_argument("--no-wait-quiet", action="store_true",
                    help="start even if other jobs keep the CPUs busy")


def prepare(args):
    """What every timing script does first: raise net.core.rmem_max, then wait for a quiet
    machine unless --no-wait-quiet."""
    log(f"net.core.rmem_max = {set_rmem_max()}")
    if not args.no_wait_quiet:
        wait_quiet()


def wait_quiet(threshold=0.15, max_wait=600):
    """Waits (bounded) until the machine is mostly idle, so another job's build or fuzzer does
    not skew a timing; logs how busy it still was if it gives up."""
    deadline = time.time() + max_wait
    busy = cpu_busy()
    while busy > threshold and time.time() < deadline:
        log(f"machine {busy:.0%} busy; waiting for it to settle")
        time.sleep(10)
        busy = cpu_busy()
    log(f"machine {busy:.0%} busy at start (load {open('/proc/loadavg').read().split()[0]})")
    return busy


class CpuWatch:
    """CPU time used by everything else while a measurement runs: all busy CPU time
    (/proc/stat) minus this script, its reaped children, and the pids given to `other()`."""

    def __init__(self):
        import resource
        self._r = resource
        self.t0 = time.time()
        self.busy0 = self._busy()
        self.self0 = self._mine()

    @staticmethod
    def _busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")

    def _mine(self):
        a = self._r.getrusage(self._r.RUSAGE_SELF)
        b = self._r.getrusage(self._r.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def other(self, accounted_cpu_s):
        """(seconds of CPU used by other processes, wall seconds)."""
        busy = self._busy() - self.busy0
        mine = self._mine() - self.self0
        return max(busy - mine - accounted_cpu_s, 0.0), time.time() - self.t0


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
