#!/usr/bin/env bash
# Instructions per call of the signalling path, independent of machine load (issue 22 item 5).
#
# Runs the release `pasarela serve` under valgrind's callgrind with the anchors' configuration
# (benches/anchors.rs), registers sipp's uas as extension 101, switches instrumentation on, offers
# CALLS digest-authenticated calls at RATE/s with the anchors' scenario
# (benches/sipp/anchor_uac.xml: INVITE, 401, ACK, INVITE with credentials, 200, ACK, BYE, 200),
# waits SETTLE seconds, dumps the profile and prints total Ir, Ir per completed call and the top
# self and inclusive costs (callgrind_annotate).
#
#   cargo build --release            # or: cargo test --release --no-run --test core_calls
#   bash benches/callgrind_calls.sh  # CALLS=1000 RATE=20 WARMUP=10 SETTLE=3 OUT=/tmp/cg BIN=target/release/pasarela
#
# The rate is low on purpose: under valgrind the server runs ~50x slower, and retransmissions
# (sipp's 500 ms timer) would add work that a native run does not do. The script checks that
# no call failed and reports sipp's retransmission count.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$here/target/release/pasarela}
CALLS=${CALLS:-1000}
RATE=${RATE:-20}
SETTLE=${SETTLE:-3}
WARMUP=${WARMUP:-10}
OUT=${OUT:-$(mktemp -d /tmp/pasarela-callgrind.XXXXXX)}
TOP=${TOP:-25}
mkdir -p "$OUT"

free_port() {
	python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cat >"$OUT/bench.toml" <<EOF
[sip]
listen = ["udp:127.0.0.1:0"]
domain = "office.test"
[log]
level = "warn"
[store]
path = "$OUT/bench.db"
[web]
listen = "127.0.0.1:0"
[calls]
no_answer_secs = 60
[media]
rtp_ports = "20000-29999"
[limits]
concurrent_calls = 0
calls_per_minute = 0
[[extension]]
number = "100"
password = "secret100"
[[extension]]
number = "101"
password = "secret101"
EOF

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# The server; its counters are zeroed after WARMUP calls (start-up and the first translation of
# the call path by valgrind are not per call).
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out.%p" \
	"$BIN" serve --config "$OUT/bench.toml" >"$OUT/server.out" 2>"$OUT/server.err" &
vg=$!
pids+=("$vg")
for _ in $(seq 1 600); do
	grep -qx ready "$OUT/server.out" 2>/dev/null && break
	sleep 0.2
done
grep -qx ready "$OUT/server.out" || { echo "server did not start; see $OUT/server.err" >&2; exit 1; }
addr=$(sed -n 's/^listening sip udp //p' "$OUT/server.out" | head -1)

uas_port=$(free_port)
# Extension 101 registered at the port where sipp's uas then answers (as benches/anchors.rs).
printf 'SEQUENTIAL\n101;[authentication username=101 password=secret101]\n' >"$OUT/reg.csv"
sipp "$addr" -sf "$here/benches/sipp/register_load.xml" -inf "$OUT/reg.csv" \
	-i 127.0.0.1 -p "$uas_port" -m 1 -ci 127.0.0.1 -nostdin -timeout 60s -timeout_error \
	>/dev/null 2>&1 || { echo "registering the uas as 101 failed" >&2; exit 1; }

sipp -sn uas -i 127.0.0.1 -p "$uas_port" -ci 127.0.0.1 -nostdin -bg -max_socket 1 \
	>"$OUT/uas.out" 2>&1 || true # -bg exits non-zero
uas=$(sed -n 's/.*PID=\[\([0-9]*\)\].*/\1/p' "$OUT/uas.out")
[ -n "$uas" ] && pids+=("$uas")

printf 'SEQUENTIAL\n100;[authentication username=100 password=secret100]\n' >"$OUT/callers.csv"
# Instrumentation from the warm-up on (frames entered before it are not in the profile, which
# keeps the self-cost list free of the threads' outer frames), counters zeroed after it.
callgrind_control -i on "$vg" >/dev/null
sipp "$addr" -sf "$here/benches/sipp/anchor_uac.xml" -inf "$OUT/callers.csv" \
	-s 101 -auth_uri 101@office.test -i 127.0.0.1 -p "$(free_port)" -ci 127.0.0.1 -nostdin \
	-r 2 -m "$WARMUP" -l 1000 -d 0 -max_socket 1 -timeout 120s >/dev/null 2>&1 || true
sleep "$SETTLE"
callgrind_control -z "$vg" >/dev/null

sipp "$addr" -sf "$here/benches/sipp/anchor_uac.xml" -inf "$OUT/callers.csv" \
	-s 101 -auth_uri 101@office.test -i 127.0.0.1 -p "$(free_port)" -ci 127.0.0.1 -nostdin \
	-r "$RATE" -m "$CALLS" -l 1000 -d 0 -max_socket 1 -timeout "$((CALLS / RATE * 4 + 60))s" \
	-trace_stat -fd 1 -stf "$OUT/stat.csv" >/dev/null 2>&1 || true
sleep "$SETTLE"
callgrind_control -d "$vg" >/dev/null

col() { # the last value of column $1 of sipp's statistics file
	awk -F';' -v name="$1" 'NR==1{for(i=1;i<=NF;i++) if($i==name) c=i} END{print $c}' "$OUT/stat.csv"
}
ok=$(col 'SuccessfulCall(C)')
failed=$(col 'FailedCall(C)')
retrans=$(col 'Retransmissions(C)')

# The dump (the one with the most instructions: callgrind_control -d writes one per dump).
dump=$(for f in "$OUT"/callgrind.out.*; do
	printf '%s %s\n' "$(sed -n 's/^summary: //p;s/^totals: //p' "$f" | head -1)" "$f"
done | sort -n | tail -1 | cut -d' ' -f2)
ir=$(sed -n 's/^summary: //p;s/^totals: //p' "$dump" | head -1)
echo "calls: $ok ok, $failed failed, $retrans retransmissions by sipp (rate $RATE/s)"
echo "total Ir: $ir"
echo "Ir per call: $((ir / (ok > 0 ? ok : 1)))"
echo "profile: $dump"
echo
echo "== self cost, top $TOP"
callgrind_annotate --threshold=100 "$dump" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n "1,$((TOP + 2))p"
echo
echo "== inclusive cost, top $TOP"
callgrind_annotate --inclusive=yes --threshold=100 "$dump" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n "1,$((TOP + 2))p"
