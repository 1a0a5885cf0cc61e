#!/usr/bin/env python3
"""Writes a kept history of N events, as the applet writes it, for the connections window's
benchmark and screenshot: scripts/history-fixture.py N STATE_DIR [--days D].

STATE_DIR/conntrack-tray/events.jsonl.1 gets the older half, events.jsonl the newer (the
applet's rotation). 40 programs on two machines (this one and a watched host "nas") reach
3,000 destinations over D days (default 30); some names come from DNS, some from PTR, some
connections go to critical ports, and some have no known process. Deterministic (seeded)."""

import json
import os
import random
import sys
from datetime import datetime, timedelta, timezone

PROGRAMS = [
    "/usr/bin/curl", "/usr/bin/wget", "/usr/bin/ssh", "/usr/bin/git", "/usr/lib/firefox/firefox",
    "/usr/bin/python3.11", "/usr/bin/node", "/usr/bin/apt-get", "/usr/lib/apt/methods/http",
    "/usr/bin/rsync", "/usr/sbin/chronyd", "/usr/bin/thunderbird", "/usr/bin/syncthing",
    "/usr/bin/npm", "/usr/bin/pip3", "/usr/bin/docker", "/usr/bin/signal-desktop",
    "/usr/bin/spotify", "/usr/bin/code", "/usr/sbin/cupsd",
] + [f"/home/alice/.local/bin/tool{i:02}" for i in range(20)]
NAMES = ["deb.debian.org", "github.com", "registry.npmjs.org", "pypi.org", "files.pythonhosted.org",
         "mozilla.org", "api.signal.org", "dns.quad9.net", "time.cloudflare.com", "example.com",
         "backup.example", "mail.example.net", "cdn.jsdelivr.net", "objects.githubusercontent.com"]
CRITICAL = {22, 23, 25, 445, 3389}


def main():
    n = int(sys.argv[1])
    state = os.path.join(sys.argv[2], "conntrack-tray")
    days = int(sys.argv[sys.argv.index("--days") + 1]) if "--days" in sys.argv else 30
    os.makedirs(state, mode=0o700, exist_ok=True)
    rnd = random.Random(13)
    dests = []
    for i in range(3000):
        ip = f"{rnd.choice([93, 151, 140, 104, 185])}.{rnd.randrange(256)}.{rnd.randrange(256)}.{1 + rnd.randrange(254)}"
        port = rnd.choice([443] * 12 + [80] * 3 + [22, 53, 123, 993, 5222, 8080, 445])
        src = rnd.choice(["dns"] * 6 + ["ptr", None, None])
        name = rnd.choice(NAMES) if src else None
        dests.append((ip, port, name, src))
    end = datetime(2026, 11, 25, 16, 0, tzinfo=timezone.utc)
    start = end - timedelta(days=days)
    step = (end - start) / max(n, 1)
    paths = [os.path.join(state, "events.jsonl.1"), os.path.join(state, "events.jsonl")]
    files = [open(p, "w", encoding="utf-8") for p in paths]
    for f, p in zip(files, paths):
        os.chmod(p, 0o600)
    for i in range(n):
        prog = rnd.randrange(len(PROGRAMS))
        # Each program keeps to its own few hundred destinations, as programs do.
        ip, port, name, src = dests[(prog * 75 + int(rnd.expovariate(1 / 20))) % len(dests)]
        exe = PROGRAMS[prog]
        machine = "nas" if prog % 7 == 3 else "laptop"
        ts = (start + step * i).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        process = None
        if rnd.random() > 0.03:
            comm = exe.rsplit("/", 1)[1][:15]
            process = {"pid": 1000 + rnd.randrange(30000), "comm": comm, "exe": exe,
                       "cmdline": [exe, "--quiet", f"https://{name or ip}/path/{i % 97}"],
                       "uid": 1000, "user": "alice", "exe_verified": True, "exe_system": exe.startswith("/usr/")}
        conn = {"ts": ts, "proto": "udp" if port in (53, 123) else "tcp", "family": "ipv4",
                "direction": "outbound", "local_ip": "192.168.1.20", "local_port": 32768 + i % 28000,
                "remote_ip": ip, "remote_port": port, "critical": port in CRITICAL, "process": process}
        if name:
            conn["host"] = name
            conn["host_source"] = src
        line = json.dumps({"on": machine, "connection": conn}, separators=(",", ":"))
        files[0 if i < n // 2 else 1].write(line + "\n")
    for f in files:
        f.close()


if __name__ == "__main__":
    main()
