#!/usr/bin/env python3
"""A scripted stand-in for conntrack-tray-helper, for the applet's tests.

Started by the applet as `fake_helper.py --format json`. It prints a hello line, then every
line appended to $FAKE_EVENTS (like `tail -f`), and appends every command it reads on stdin to
$FAKE_LOG, after a line "start PID" per start. It exits when stdin closes, like the real one,
or with status 3 when an event line is "crash".
"""
import json, os, sys, threading, time

events, log = os.environ["FAKE_EVENTS"], os.environ["FAKE_LOG"]

def note(line):
    with open(log, "a") as f:
        f.write(line.rstrip("\n") + "\n")

# Only lines appended after this start: a restarted helper does not replay old events. The
# position is taken before "start" is logged, so a test that waits for "start" loses nothing.
start_pos = os.path.getsize(events) if os.path.exists(events) else 0
note("start %d" % os.getpid())
host = os.environ.get("FAKE_HOSTNAME", "fakehost")
print(json.dumps({"type": "hello", "version": "fake", "hostname": host, "pid": os.getpid(), "config": {}}), flush=True)

def tail():
    pos = start_pos
    while True:
        try:
            with open(events) as f:
                f.seek(pos)
                for line in f:
                    if not line.endswith("\n"):
                        break
                    pos += len(line.encode())
                    if line.strip() == "crash":
                        os._exit(3)
                    sys.stdout.write(line)
                sys.stdout.flush()
        except FileNotFoundError:
            pass
        time.sleep(0.02)

threading.Thread(target=tail, daemon=True).start()
for line in sys.stdin:
    note(line)
note("eof")
