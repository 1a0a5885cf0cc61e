#!/usr/bin/env python3
"""Test peer for the namespace tests: tiny servers and clients with a known pid.

  peer.py serve HOST PORT [PORT...]   TCP listeners (and UDP sockets) that accept and hold
  peer.py keepalive HOST PORT         a TCP listener whose connections send a keepalive each
                                      second (a server's packets after a client went quiet)
  peer.py connect HOST PORT [HOLD]    one TCP connection, held HOLD seconds (default 1)
  peer.py udp HOST PORT [HOLD]        one UDP datagram from an unconnected socket
  peer.py name NAME HOST PORT         connect with comm set to NAME (hostile names)
  peer.py dns HOST ADDR               a DNS server on HOST:53 answering every A question with
                                      a CNAME to edge.cdn.test and an A record ADDR for it,
                                      and every PTR question with ptr.example.test
  peer.py resolve NAME SERVER PORT    ask SERVER for NAME, then connect to the answer's PORT

Prints "ready" once listening, so a test can wait for it. Every mode ends by itself.
"""
import ctypes, socket, struct, sys, threading, time

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

def keepalive(host, port):
    t = socket.socket(family(host), socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((host, int(port))); t.listen(16); t.settimeout(1)
    print("ready", flush=True)
    held, end = [], time.time() + 120
    while time.time() < end:
        try:
            c, _ = t.accept()
        except socket.timeout:
            continue
        c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        held.append(c)

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

def encode(name):
    out = b""
    for label in name.strip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"

def dns_server(host, addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 53))
    print("ready", flush=True)
    end = time.time() + 120
    while time.time() < end:
        q, peer = s.recvfrom(512)
        i = 12
        while q[i] != 0:
            i += q[i] + 1
        question = q[12:i + 5]
        qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
        if qtype == 12:  # PTR: every address is ptr.example.test
            name = encode("ptr.example.test")
            ptr = b"\xc0\x0c" + struct.pack("!HHIH", 12, 1, 300, len(name)) + name
            s.sendto(q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + question + ptr, peer)
            continue
        target = encode("edge.cdn.test")
        cname = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 300, len(target)) + target
        a = target + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton(addr)
        header = q[:2] + struct.pack("!HHHHH", 0x8180, 1, 2, 0, 0)
        s.sendto(header + question + cname + a, peer)

def resolve(name, server, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + encode(name) + struct.pack("!HH", 1, 1), (server, 53))
    reply, _ = s.recvfrom(512)
    # Our server puts the A record last: its 4 bytes end the reply.
    addr = socket.inet_ntoa(reply[-4:])
    connect(addr, port, 0.3)

cmd = sys.argv[1]
if cmd == "serve":
    serve(sys.argv[2], [int(p) for p in sys.argv[3:]])
elif cmd == "keepalive":
    keepalive(sys.argv[2], sys.argv[3])
elif cmd == "connect":
    connect(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else 1)
elif cmd == "udp":
    udp(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else 1)
elif cmd == "name":
    named(sys.argv[2], sys.argv[3], sys.argv[4])
elif cmd == "dns":
    dns_server(sys.argv[2], sys.argv[3])
elif cmd == "resolve":
    resolve(sys.argv[2], sys.argv[3], sys.argv[4])
else:
    sys.exit("unknown mode " + cmd)
