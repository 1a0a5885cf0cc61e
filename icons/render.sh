#!/bin/sh
# Renders the application icon to the PNG sizes of the hicolor theme (needs rsvg-convert,
# Debian: librsvg2-bin). The PNGs are committed; run this after changing the SVG.
set -e
cd "$(dirname "$0")"
for size in 16 22 24 32 48 64 128 256; do
    mkdir -p "hicolor/${size}x${size}/apps"
    rsvg-convert -w "$size" -h "$size" conntrack-tray.svg -o "hicolor/${size}x${size}/apps/conntrack-tray.png"
done
