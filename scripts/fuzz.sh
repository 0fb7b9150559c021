#!/usr/bin/env bash
# Fuzzes the Auth0 answer parser (fuzz/fuzz_targets/auth0_answer.rs) with libFuzzer.
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the machine's stable toolchain accept
# them. Usage: scripts/fuzz.sh [seconds]   (default 60)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
RUSTC_BOOTSTRAP=1 exec cargo fuzz run auth0_answer -- -max_total_time="${1:-60}" -max_len=4096
