#!/bin/sh
# Renders the icons to the PNG sizes of the hicolor theme (needs rsvg-convert, Debian:
# librsvg2-bin): the application icon to apps/, the four tray state icons to status/ (the
# applet embeds two of those sizes, see src/icons.rs). The PNGs are committed; run this after
# changing an SVG (a test compares them with a fresh rendering).
set -e
cd "$(dirname "$0")"
for size in 16 22 24 32 48 64 128 256; do
    mkdir -p "hicolor/${size}x${size}/apps"
    rsvg-convert -w "$size" -h "$size" conntrack-tray.svg -o "hicolor/${size}x${size}/apps/conntrack-tray.png"
done
for size in 16 22 24 32 48 64; do
    mkdir -p "hicolor/${size}x${size}/status"
    for state in monitoring alert paused error; do
        rsvg-convert -w "$size" -h "$size" "conntrack-tray-$state.svg" \
            -o "hicolor/${size}x${size}/status/conntrack-tray-$state.png"
    done
done
