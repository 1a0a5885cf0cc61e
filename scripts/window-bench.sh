#!/usr/bin/env bash
# The connections window's costs (issue 13), printed as Markdown rows for the README:
#   1. the window over 100,000 kept events (scripts/history-fixture.py): the time from its
#      start until the whole history is read and listed (`window --timing`), the time until
#      it is mapped, and its RSS (VmRSS, VmHWM) once it is idle, under Xvfb (the window draws
#      on the CPU into shared memory: no OpenGL); then its CPU while 1,000 events a second
#      are appended to the history for 10 s (each one drawn as it arrives), and while idle;
#   2. the applet's idle cost with the window closed, before and after a window was opened
#      (by the applet's own Show, over a private bus) and closed again: its RSS and its
#      wakeups (context switches of all its threads) in 30 s without events.
# Needs: xvfb xdotool dbus-daemon python3 (Debian); a release build:
#   cargo build --release -p conntrack-tray && scripts/window-bench.sh [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-100000}
bin=${APPLET:-target/release/conntrack-tray}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
display=:59
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 & pids+=($!)
dbus-daemon --session --nofork --nopidfile --print-address=1 --address="unix:path=$work/bus" >"$work/addr" & pids+=($!)
sleep 1
export DISPLAY=$display
DBUS_SESSION_BUS_ADDRESS=$(head -1 "$work/addr")
export DBUS_SESSION_BUS_ADDRESS HOME="$work" XDG_CONFIG_HOME="$work/config" XDG_STATE_HOME="$work/state"
python3 scripts/history-fixture.py "$events" "$work/state"
size=$(du -ch "$work"/state/conntrack-tray/events.jsonl* | tail -1 | cut -f1)

kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(non)?voluntary_ctxt_switches/ { n += $2 } END { print n + 0 }'
}

# 1. The window alone.
t0=$(date +%s.%N)
"$bin" window --timing 2>"$work/window.log" & win=$!; pids+=($win)
xdotool search --sync --name 'conntrack-tray: Connections' >/dev/null
t_map=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
for _ in $(seq 100); do grep -q 'read and listed' "$work/window.log" && break; sleep 0.1; done
read_ms=$(sed -n 's/.* in \([0-9]*\) ms$/\1/p' "$work/window.log")
sleep 3
w_rss=$(kib "$win" VmRSS); w_hwm=$(kib "$win" VmHWM); w_anon=$(kib "$win" RssAnon)
# Its CPU (user + system clock ticks) over a span, as a share of one core.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
share() { awk -v a="$1" -v b="$2" -v s="$3" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) * 100 / hz / s }'; }
c0=$(ticks "$win"); sleep 10; c1=$(ticks "$win"); w_idle=$(share "$c0" "$c1" 10)
c0=$(ticks "$win")
python3 - "$work/state/conntrack-tray/events.jsonl" <<'PY'
import json, sys, time
line = open(sys.argv[1]).readline()
event = json.loads(line)
conn = event["connection"]
with open(sys.argv[1], "a") as f:
    start = time.monotonic()
    for i in range(10000):
        conn["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        conn["remote_ip"] = f"203.0.113.{i % 200}"
        f.write(json.dumps(event) + "\n")
        f.flush()
        # 1,000 a second, in steps of a millisecond.
        delay = start + (i + 1) / 1000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
PY
c1=$(ticks "$win"); w_live=$(share "$c0" "$c1" 10)
w_rss_live=$(kib "$win" VmRSS)
# Scrolling the list: 200 wheel steps, 10 ms apart, over the 1000 x 640 window.
xdotool search --name 'conntrack-tray: Connections' windowfocus --sync >/dev/null 2>&1 || true
eval "$(xdotool search --name 'conntrack-tray: Connections' getwindowgeometry --shell | head -3)"
xdotool mousemove $((X + 400)) $((Y + 300))
c0=$(ticks "$win")
xdotool click --repeat 200 --delay 10 5
sleep 1; c1=$(ticks "$win")
w_scroll=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) * 1000 / hz / 200 }')
kill "$win"; wait "$win" 2>/dev/null || true

# 2. The applet, idle, before and after a window.
touch "$work/fake-events"
FAKE_EVENTS="$work/fake-events" FAKE_LOG="$work/fake-log" "$bin" \
    --helper tests/tools/fake_helper.py --no-pkexec >/dev/null 2>&1 & app=$!; pids+=($app)
sleep 5
idle() {
    local a b
    a=$(switches "$app"); sleep 30; b=$(switches "$app")
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b - a) / 30 }'
}
a_rss1=$(kib "$app" VmRSS); a_wake1=$(idle)
dbus-send --session --type=method_call --dest=io.github.conntrack_tray.Applet \
    /io/github/conntrack_tray/Applet io.github.conntrack_tray.Applet.Show
xdotool search --sync --name 'conntrack-tray: Connections' >/dev/null
sleep 3
child=$(pgrep -P "$app" -f ' window' | head -1)
c_rss=$(kib "$child" VmRSS)
kill "$child"
sleep 2
a_rss2=$(kib "$app" VmRSS); a_threads=$(ls /proc/"$app"/task | wc -l); a_wake2=$(idle)

echo "| measure | connections window |"
echo "|---|---|"
echo "| history | $events events in 2 files, $size |"
echo "| start → every event read and listed | $read_ms ms |"
echo "| start → window mapped | $t_map ms |"
echo "| window RSS, idle after reading (target < 80 MiB) | $(mib "$w_rss") MiB (peak $(mib "$w_hwm") MiB) |"
echo "| of it: the window's anonymous memory | $(mib "$w_anon") MiB |"
echo "| window CPU, idle / while 1,000 events a second arrive for 10 s | $w_idle% / $w_live% of a core (RSS after: $(mib "$w_rss_live") MiB) |"
echo "| window CPU scrolling: per wheel step (egui animates each over several frames) | $w_scroll ms |"
echo "| window RSS, opened by the applet | $(mib "$c_rss") MiB |"
echo "| applet RSS idle, before a window / after one was closed | $(mib "$a_rss1") MiB / $(mib "$a_rss2") MiB ($a_threads threads) |"
echo "| applet wakeups idle, 30 s, before / after (target ≤ 0.2/s) | $a_wake1/s / $a_wake2/s |"
