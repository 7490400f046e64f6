#!/usr/bin/env bash
# Runs the fuzz targets one after another, each for a bounded time, and prints per target how
# many inputs it ran and whether it ran clean.
#
#   fuzz/run.sh                      # every target, FUZZ_SECONDS (default 600) each
#   FUZZ_SECONDS=60 fuzz/run.sh request_head chunked
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). New corpus entries go
# to fuzz/runs/corpus/<target> (ignored by git; the committed seeds in fuzz/corpus stay as they
# are), logs to fuzz/runs/logs, crashes to fuzz/artifacts/<target>. Exits non-zero when a
# target crashed.
set -u
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-600}
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Built once, then run as built: a source edit during a long run does not rebuild mid-way.
# -a: debug assertions (integer overflow, `debug_assert!`) are part of what is checked.
cargo +nightly fuzz build -a || exit 2
bin=target/$(rustc +nightly -vV | sed -n "s/^host: //p")/release

mkdir -p runs/logs
failed=0
for target in "${targets[@]}"; do
    mkdir -p "runs/corpus/$target" "corpus/$target" "artifacts/$target"
    log="runs/logs/$target.log"
    started=$(date +%s)
    "$bin/$target" -artifact_prefix="artifacts/$target/" -max_total_time="$seconds" \
        -timeout=30 -print_final_stats=1 "runs/corpus/$target" "corpus/$target" >"$log" 2>&1
    status=$?
    took=$(( $(date +%s) - started ))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    execs=${execs:-0}
    rate=$(( execs / (took > 0 ? took : 1) ))
    if [ "$status" -eq 0 ]; then
        verdict=clean
    else
        verdict="CRASH (exit $status; see $log and fuzz/artifacts/$target)"
        failed=1
    fi
    printf '%-16s %10s execs in %4ss (%s/s): %s\n' "$target" "$execs" "$took" "$rate" "$verdict"
done
exit $failed
