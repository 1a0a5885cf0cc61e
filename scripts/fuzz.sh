#!/bin/sh
# Runs each cargo-fuzz target for FUZZ_SECONDS (default 60) from its committed seed corpus
# (helper/fuzz/corpus/TARGET, copied, so the checkout is not changed). A crash fails the run
# and leaves the input in helper/fuzz/artifacts/TARGET: add it to the seeds and to a unit
# test. cargo-fuzz wants nightly features; RUSTC_BOOTSTRAP lets the stable toolchain, the
# only one here, build them. Needs `cargo install cargo-fuzz`.
set -eu
cd "$(dirname "$0")/../helper"
seconds=${FUZZ_SECONDS:-60}
for target in ctnetlink dns commands; do
    work=$(mktemp -d)
    cp fuzz/corpus/"$target"/* "$work"/
    echo "fuzzing $target for ${seconds}s"
    status=0
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$work" -- -max_total_time="$seconds" \
        -print_final_stats=1 >"$work.log" 2>&1 || status=$?
    grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY|Test unit written)' "$work.log" || true
    if [ "$status" -ne 0 ]; then
        tail -30 "$work.log" >&2
        echo "fuzz target $target failed (status $status): see helper/fuzz/artifacts/$target" >&2
        rm -rf "$work" "$work.log"
        exit 1
    fi
    rm -rf "$work" "$work.log"
done
