#!/usr/bin/env python3
"""Test peer for the namespace tests: tiny servers and clients with a known pid.

  peer.py serve HOST PORT [PORT...]   TCP listeners (and UDP sockets) that accept and hold
  peer.py connect HOST PORT [HOLD]    one TCP connection, held HOLD seconds (default 1)
  peer.py udp HOST PORT [HOLD]        one UDP datagram from an unconnected socket
  peer.py name NAME HOST PORT         connect with comm set to NAME (hostile names)

Prints "ready" once listening, so a test can wait for it. Every mode ends by itself.
"""
import ctypes, socket, sys, threading, time

def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET

def serve(host, ports):
    socks = []
    for p in ports:
        t = socket.socket(family(host), socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((host, p)); t.listen(128); socks.append(t)
        u = socket.socket(family(host), socket.SOCK_DGRAM)
        u.bind((host, p)); socks.append(u)
    def accept(t):
        held = []
        while True:
            try:
                c, _ = t.accept()
                held.append(c)
                if len(held) > 200:
                    held.pop(0).close()
            except OSError:
                return
    for t in socks:
        if t.type == socket.SOCK_STREAM:
            threading.Thread(target=accept, args=(t,), daemon=True).start()
    print("ready", flush=True)
    time.sleep(120)

def connect(host, port, hold):
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.connect((host, int(port)))
    print("connected %d" % s.getsockname()[1], flush=True)
    time.sleep(float(hold))

def udp(host, port, hold):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.sendto(b"x", (host, int(port)))
    print("sent %d" % s.getsockname()[1], flush=True)
    time.sleep(float(hold))

def named(name, host, port):
    libc = ctypes.CDLL(None)
    libc.prctl(15, name.encode("utf-8", "surrogateescape"), 0, 0, 0)  # PR_SET_NAME
    connect(host, port, 1)

cmd = sys.argv[1]
if cmd == "serve":
    serve(sys.argv[2], [int(p) for p in sys.argv[3:]])
elif cmd == "connect":
    connect(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else 1)
elif cmd == "udp":
    udp(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else 1)
elif cmd == "name":
    named(sys.argv[2], sys.argv[3], sys.argv[4])
else:
    sys.exit("unknown mode " + cmd)
