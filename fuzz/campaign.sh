#!/usr/bin/env bash
# The recorded fuzzing campaign: every target under AFL++ until 10 million executions or
# 15 minutes, whichever comes first (FUZZ_EXECS, FUZZ_SECONDS), JOBS targets at a time; then
# each corpus is minimized (afl-cmin) into fuzz/corpus/<target>, which CI replays
# (tests/fuzz_corpora.rs), and the figures are written to fuzz/campaign.md.
#   fuzz/campaign.sh [TARGET...]      (as root on Debian 12; installs cargo-afl when missing)
set -euo pipefail
cd "$(dirname "$0")"
execs=${FUZZ_EXECS:-10000000}
seconds=${FUZZ_SECONDS:-900}
jobs=${JOBS:-1}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(update_response keys version config elf state dropin)
command -v cargo-afl >/dev/null || cargo install --locked cargo-afl@0.18.2
cargo afl build --release --quiet
out=${FUZZ_OUT:-$PWD/target/campaign}
mkdir -p "$out"
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_QUIET=1
# AFL++ 4.40c's default afl-cmin (Python) finds no tuples with afl.rs targets; the awk one
# that ships beside it works.
afl_bin=$(dirname "$(ls -d "$HOME"/.local/share/afl.rs/rustc-*/afl.rs-*/afl/bin/afl-cmin.awk | tail -n1)")
minimize() {
  local t=$1
  rm -rf "corpus/$t.new"
  AFL_PATH=$afl_bin PATH=$afl_bin:$PATH "$afl_bin/afl-cmin.awk" -i "$out/$t/default/queue" \
    -o "corpus/$t.new" -- "target/release/$t" >"$out/$t.cmin.log" 2>&1
  [ -n "$(ls -A "corpus/$t.new")" ] || { echo "afl-cmin kept nothing for $t; see $out/$t.cmin.log" >&2; return 1; }
  rm -rf "corpus/$t" && mv "corpus/$t.new" "corpus/$t"
}
run() {
  local t=$1 seeds=seeds/$1
  # Resume from the kept corpus when there is one.
  [ -d "corpus/$t" ] && [ -n "$(ls -A "corpus/$t")" ] && seeds=corpus/$t
  rm -rf "${out:?}/$t"
  cargo afl fuzz -i "$seeds" -o "$out/$t" -V "$seconds" -E "$execs" -- "target/release/$t" \
    >"$out/$t.log" 2>&1 || { echo "afl-fuzz $t failed; see $out/$t.log" >&2; return 1; }
  minimize "$t"
}
mkdir -p corpus
running=0
for t in "${targets[@]}"; do
  # CMIN_ONLY=1: minimize the last campaign's queues again, without fuzzing.
  if [ -n "${CMIN_ONLY:-}" ]; then minimize "$t"; continue; fi
  run "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait
{
  echo "| target | executions | seconds | execs/s | paths (queue) | corpus kept | crashes | hangs |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for t in update_response keys version config elf state dropin; do
    s=$out/$t/default/fuzzer_stats
    [ -f "$s" ] || continue
    get() { sed -n "s/^$1 *: *//p" "$s"; }
    start=$(get start_time); last=$(get last_update)
    echo "| $t | $(get execs_done) | $((last - start)) | $(get execs_per_sec) | $(get corpus_count) | $(ls "corpus/$t" | wc -l) | $(get saved_crashes) | $(get saved_hangs) |"
  done
} | tee campaign.md
