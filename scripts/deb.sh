#!/bin/sh
# Builds target/debian/conntrack-tray_*.deb with cargo-deb (`cargo install cargo-deb`).
# PROFILE=dev packages the debug build (the install test does, to avoid a second build).
set -e
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
if [ "$profile" = release ]; then
    cargo build --release --workspace --locked
fi
# The policy names the helper where the package puts it.
mkdir -p target/deb-assets
sed 's|/usr/local/libexec/conntrack-tray/|/usr/libexec/conntrack-tray/|' \
    polkit/io.github.conntrack-tray.policy > target/deb-assets/io.github.conntrack-tray.policy
sed 's|@LIBEXECDIR@|/usr/libexec|' conf/conntrack-tray-helper.service > target/deb-assets/conntrack-tray-helper.service
cargo deb -p conntrack-tray --no-build --profile "$profile" "$@"
