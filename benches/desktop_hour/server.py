"""The desktop hour's servers: TCP listeners on HOST, one per PORT, that accept and hold.

  server.py HOST PORT...

Prints "ready" once listening; runs until it is killed.
"""
import socket, sys, threading, time

def accept(t):
    held = []
    while True:
        c, _ = t.accept()
        held.append(c)
        if len(held) > 500:
            held.pop(0).close()

for p in sys.argv[2:]:
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((sys.argv[1], int(p)))
    t.listen(512)
    threading.Thread(target=accept, args=(t,), daemon=True).start()
print("ready", flush=True)
while True:
    time.sleep(3600)
