"""One program of the desktop hour, run by a copy of python under the program's own name.

  program.py START GAP HOLD TARGETS

Waits until the wall clock reads START, then connects to each HOST:PORT of the file TARGETS
in turn (a file, so that the command line the helper reports stays short), the i-th at
START + i * GAP (a refused connect counts: the kernel saw the flow), and prints for each the
CLOCK_REALTIME read just before its connect(), as "SECONDS HOST PORT". Keeps the connections
that were accepted, and stays HOLD seconds after the last, as a program does, so the helper
still finds it running.
"""
import socket, sys, time

def now():
    return time.clock_gettime(time.CLOCK_REALTIME)

def main():
    start, gap, hold = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    held, out = [], []
    with open(sys.argv[4]) as f:
        targets = f.read().split()
    for i, target in enumerate(targets):
        wait = start + i * gap - now()
        if wait > 0:
            time.sleep(wait)
        host, port = target.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        at = now()
        try:
            s.connect((host, int(port)))
            held.append(s)
        except OSError:
            s.close()
        out.append("%.6f %s %s" % (at, host, port))
    time.sleep(hold)
    print("\n".join(out), flush=True)

main()
