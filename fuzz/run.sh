#!/usr/bin/env bash
# Time-boxed fuzzing of every target in fuzz/fuzz_targets, each seeded with its corpus in
# fuzz/corpus/<target> (real messages: RFC 4475/5118 torture, Asterisk DUNDi captures, modem
# transcripts, NAPTR records, rate CSV files). New interesting inputs go to a scratch copy, so
# the committed corpus stays small. A crash stops the run with the crashing input under
# fuzz/artifacts/<target>/ and a non-zero exit: add it as a regression unit test, then fix.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 45 s, every target)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); the stable toolchain is used with
# RUSTC_BOOTSTRAP=1 for the coverage flags. FUZZ_SANITIZER (default `none`) picks the sanitizer:
# the parsers are safe Rust, so what fuzzing finds is panics and hangs, which need none, and
# the build without one takes a third of the time; use `address` when unsafe code is touched.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-45}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
export RUSTC_BOOTSTRAP=1
san="${FUZZ_SANITIZER:-none}"
for t in "${targets[@]}"; do cargo fuzz build -O -s "$san" "$t"; done
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    echo "fuzz: $t for ${secs} s"
    rc=0
    cargo fuzz run -O -s "$san" "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$scratch/$t.log" 2>&1 || rc=$?
    grep -E '^stat::(number_of_executed_units|new_units_added)|panicked|SUMMARY|Test unit written' \
        "$scratch/$t.log" || true
    if [ "$rc" -ne 0 ]; then
        tail -40 "$scratch/$t.log"
        echo "fuzz: $t FAILED (see fuzz/artifacts/$t)"
        exit 1
    fi
done
echo "fuzz: all ${#targets[@]} targets ran ${secs} s each without a crash"
