#!/usr/bin/env bash
# Takes docs/screenshot.png: the applet's tray icon with its menu open and notifications on
# screen, in Xvfb with lxqt-panel as the StatusNotifierItem host and dunst as the notification
# server, all on a private D-Bus bus, fed by the scripted helper from the tests.
# Needs: xvfb lxqt-panel dunst xdotool imagemagick dbus-daemon (Debian package names).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p conntrack-tray
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/home/.config/lxqt"
cat > "$work/home/.config/lxqt/panel.conf" <<'CONF'
[General]
__userfile__=true
[panel1]
alignment=1
height=36
iconSize=24
plugins=statusnotifier
position=Bottom
width=100
width-percent=true
[statusnotifier]
type=statusnotifier
CONF
display=:57
Xvfb "$display" -screen 0 1024x600x24 -nolisten tcp >/dev/null 2>&1 & pids+=($!)
dbus-daemon --session --nofork --nopidfile --print-address=1 --address="unix:path=$work/bus" >"$work/addr" & pids+=($!)
sleep 1
export DISPLAY=$display DBUS_SESSION_BUS_ADDRESS
DBUS_SESSION_BUS_ADDRESS=$(head -1 "$work/addr")
export HOME="$work/home" XDG_CONFIG_HOME="$work/home/.config" XDG_STATE_HOME="$work/home/.state"
lxqt-panel >/dev/null 2>&1 & pids+=($!)
dunst >/dev/null 2>&1 & pids+=($!)
sleep 2
touch "$work/events"
FAKE_EVENTS="$work/events" FAKE_LOG="$work/log" target/debug/conntrack-tray \
    --helper tests/tools/fake_helper.py --no-pkexec >/dev/null 2>&1 & pids+=($!)
sleep 2
python3 - "$work/events" <<'PY'
import json, sys
def conn(exe, remote, port, critical, pid):
    comm = exe.rsplit('/', 1)[-1]
    return json.dumps({"type": "connection", "ts": "2026-11-25T15:40:00.000000Z", "proto": "tcp",
        "family": "ipv4", "direction": "outbound", "local_ip": "192.168.1.20", "local_port": 43210,
        "remote_ip": remote, "remote_port": port, "critical": critical,
        "process": {"pid": pid, "comm": comm, "exe": exe, "cmdline": [comm], "uid": 1000, "user": "alice"}})
with open(sys.argv[1], "a") as f:
    f.write(conn("/usr/bin/wget", "151.101.1.69", 80, True, 3301) + "\n")
    f.write(conn("/usr/lib/thunderbird/thunderbird-bin", "10.10.0.7", 993, False, 2211) + "\n")
    f.write(conn("/home/alice/.local/bin/updater", "203.0.113.50", 443, True, 4242) + "\n")
PY
sleep 1.5
# The icon is the first item of the bottom panel: right-click opens its menu.
xdotool mousemove 16 584 click 3
sleep 1
import -window root docs/screenshot.png
echo "wrote docs/screenshot.png"

# docs/window.png: the connections window over a fixture history (two days, two machines),
# one connection's details open, alone on a display of its own so the capture is the window.
wdisplay=:58
Xvfb "$wdisplay" -screen 0 1100x700x24 -nolisten tcp >/dev/null 2>&1 & pids+=($!)
sleep 1
python3 scripts/history-fixture.py 2000 "$work/window-state" --days 2
DISPLAY=$wdisplay XDG_STATE_HOME="$work/window-state" HOME=/home/alice target/debug/conntrack-tray window \
    >/dev/null 2>"$work/window.log" & pids+=($!)
wid=$(DISPLAY=$wdisplay xdotool search --sync --name 'Connections' | head -1)
sleep 3
# The second destination row of the first program: its details open on the right.
DISPLAY=$wdisplay xdotool mousemove 240 157 click 1
sleep 1.5
DISPLAY=$wdisplay import -window "$wid" docs/window.png
echo "wrote docs/window.png"
