#!/usr/bin/env python3
"""Drain of one sled hub next to hubs on a shared PostgreSQL store, same run, same machine.

Each round, for each setup (interleaved: sled, pg x1, pg x2, then the other way round):
1. mosquitto (plain TCP on loopback) and, for the PostgreSQL setups, a fresh throw-away
   cluster (initdb + pg_ctl in a temporary folder, as the postgres user when run as root);
2. an edge queues COUNT distinct login datagrams while no hub runs;
3. the hub(s) start in mode = "external" with a shared subscription (and [store] kind =
   "postgres" for the shared setups), each with a file notifier in its own folder;
4. timed from the edge's link coming up to the last line in the files (summed over hubs).

    bench/shared_store.py [--count 20000] [--rounds 2]

Needs release binaries (BIN, default target/release), mosquitto, PostgreSQL's server
programs and gcc (for the datagram flooder).
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wb  # noqa: E402

SETUPS = ("sled", "pg1", "pg2")


def as_postgres(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


def pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        sys.exit("PostgreSQL's server programs are missing (apt install postgresql)")
    return os.path.dirname(found[-1])


def start_postgres(d):
    """A fresh cluster in d; returns (connection string, stop function)."""
    os.makedirs(d, exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", d], check=True)
    data, port, b = os.path.join(d, "data"), wb.free_port(), pg_bin()
    subprocess.run(as_postgres([f"{b}/initdb", "--auth=trust", "--username=warren",
                                "--encoding=UTF8", "-D", data]),
                   check=True, capture_output=True)
    opts = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data}"
    subprocess.run(as_postgres([f"{b}/pg_ctl", "-D", data, "-w", "-o", opts, "-l",
                                f"{data}/log", "start"]), check=True, capture_output=True)

    def stop():
        subprocess.run(as_postgres([f"{b}/pg_ctl", "-D", data, "-m", "fast", "stop"]),
                       capture_output=True)
    return f"host=127.0.0.1 port={port} user=warren dbname=postgres", stop


def start_mosquitto(d):
    port = wb.free_port()
    conf = os.path.join(d, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"user root\npersistence false\nlistener {port} 127.0.0.1\n"
                "allow_anonymous true\nmax_queued_messages 100000\n")
    proc = wb.Procs.spawn("mosquitto", ["mosquitto", "-c", conf], os.path.join(d, "mqtt.log"))
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            wb.socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return port, proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def hub_config(d, name, mqtt_port, url_file):
    os.makedirs(d, exist_ok=True)
    store = "" if url_file is None else (
        f'[store]\nkind = "postgres"\nurl_file = "{url_file}"\nname = "{name}"\n')
    text = f"""state_dir = "{d}/state"
shutdown_grace = "5s"
[broker]
mode = "external"
address = "127.0.0.1:{mqtt_port}"
tls = false
client_id = "warren-{name}"
share_group = "warren"
{store}
[notifier.out]
type = "file"
path = "{d}/out.log"
[[route]]
match = {{ kind = "login" }}
notify = ["out"]
format = "User {{user}} logged into {{hostname}} from {{rhost}} at {{tstamp}}"
"""
    path = os.path.join(d, "hub.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def run(setup, args, exe):
    d = wb.workdir(f"shared-{setup}")
    mqtt_port, mqtt = start_mosquitto(d)
    url_file, stop_pg = None, None
    if setup != "sled":
        os.chmod(d, 0o755)  # the postgres user walks through it to its cluster
        url, stop_pg = start_postgres(os.path.join(d, "pg"))
        url_file = os.path.join(d, "store.url")
        with open(url_file, "w") as f:
            f.write(url)
        os.chmod(url_file, 0o600)
    udp = wb.free_port(wb.socket.SOCK_DGRAM)
    edge_cfg = wb.edge_config(os.path.join(d, "edge"), udp, hub_addr=f"127.0.0.1:{mqtt_port}")
    esock = os.path.join(d, "edge", "state", "edge.sock")
    edge = wb.Procs.spawn("edge", [wb.EDGE, "run", "--config", edge_cfg],
                          os.path.join(d, "edge.log"))
    wb.wait_status(esock, edge)
    fl = wb.flood(exe, udp, args.count, 20000)
    fl.communicate(timeout=120)
    deadline = time.time() + 60
    while wb.status(esock)["counters"]["accepted"] < args.count and time.time() < deadline:
        time.sleep(0.1)
    queued = wb.status(esock)["queue_depth"]
    wb.Procs.stop(edge)

    names = {"sled": ["one"], "pg1": ["one"], "pg2": ["one", "two"]}[setup]
    hubs, outs = [], []
    for name in names:
        hd = os.path.join(d, name)
        cfg = hub_config(hd, name, mqtt_port, url_file)
        hub = wb.Procs.spawn(f"hub-{name}", [wb.HUB, "run", "--config", cfg],
                             os.path.join(d, f"hub-{name}.log"))
        sock = os.path.join(hd, "state", "hub.sock")
        wb.wait_status(sock, hub)
        limit = time.time() + 30
        while not wb.status(sock)["broker_connected"] and time.time() < limit:
            time.sleep(0.05)
        hubs.append(hub)
        outs.append(os.path.join(hd, "out.log"))
    time.sleep(1)  # the subscriptions go out right after the ConnAck
    edge = wb.Procs.spawn("edge", [wb.EDGE, "run", "--config", edge_cfg],
                          os.path.join(d, "edge.log"))
    wb.wait_status(esock, edge, timeout=120)
    t_link = None
    deadline = time.time() + args.timeout
    lines = 0
    while time.time() < deadline:
        es = wb.status(esock)
        if t_link is None and es["link"]["connected"]:
            t_link = es["link"]["since_ms"] / 1000.0
        lines = sum(wb.count_lines(o) for o in outs)
        if lines >= queued:
            break
        time.sleep(0.1)
    done = time.time()
    cpu = sum(wb.proc_cpu_seconds(h.pid) for h in hubs)
    for p in hubs + [edge, mqtt]:
        wb.Procs.stop(p)
    if stop_pg:
        stop_pg()
    shutil.rmtree(d, ignore_errors=True)
    rate = lines / (done - t_link) if t_link else 0
    wb.log(f"{setup}: {lines}/{queued} lines in {done - (t_link or done):.2f}s = {rate:,.0f}/s, "
           f"hub CPU {cpu:.1f}s")
    return {"setup": setup, "count": queued, "lines": lines, "rate": rate,
            "hub_cpu_s": cpu}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600)
    wb.add_quiet_arg(ap)
    args = ap.parse_args()
    wb.prepare(args)
    exe = wb.flooder(wb.workdir("shared-flood"))
    results = []
    for r in range(args.rounds):
        order = SETUPS if r % 2 == 0 else tuple(reversed(SETUPS))
        for setup in order:
            results.append(run(setup, args, exe))
    med = {}
    for s in SETUPS:
        rates = sorted(x["rate"] for x in results if x["setup"] == s)
        med[s] = rates[len(rates) // 2]
    print("| setup | drain (median) | vs one sled hub |")
    print("|---|---:|---:|")
    for s, label in (("sled", "one hub, sled"), ("pg1", "one hub, PostgreSQL"),
                     ("pg2", "two hubs, PostgreSQL")):
        print(f"| {label} | {med[s]:,.0f}/s | {med[s] / med['sled']:.2f} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
