#!/usr/bin/env bash
# Instructions per call of the signalling path, independent of machine load (issue 22 item 5).
#
# Runs the release `pasarela serve` (or, with SYSTEM=kamailio, Kamailio with the anchors'
# configuration) under valgrind's callgrind, offers WARMUP calls, zeroes the counters, offers
# CALLS digest-authenticated calls at RATE/s with the anchors' scenario
# (benches/sipp/anchor_uac.xml: INVITE, 401, ACK, INVITE with credentials, 200, ACK, BYE, 200;
# sipp's uas answers, registered as extension 101 for pasarela), waits SETTLE seconds, dumps
# the profile and prints total Ir, Ir per completed call and the top self and inclusive costs
# (callgrind_annotate; for Kamailio the sum over its processes, without the lists).
#
#   cargo test --release --no-run --test core_calls   # builds target/release/pasarela
#   bash benches/callgrind_calls.sh                   # pasarela
#   SYSTEM=kamailio bash benches/callgrind_calls.sh   # the anchor, same flow
#   env: CALLS=300 RATE=10 WARMUP=10 SETTLE=3 TOP=25 OUT=/tmp/dir BIN=target/release/pasarela
#
# The rate is low on purpose: under valgrind a server runs ~50x slower, and retransmissions
# (sipp's 500 ms timer) would add work that a native run does not do; the script prints sipp's
# retransmission count, which should be 0. At this rate the call-record writer commits about
# once per call; at hundreds of calls/s its commits are shared by many calls, so the Ir per
# call here overstates the writer's share. Kamailio's figure is an upper bound only: under
# valgrind its worker processes slow down each other (shared-memory locks spin while the holder
# runs instrumented), and its timer processes tick whether calls come or not.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
SYSTEM=${SYSTEM:-pasarela}
BIN=${BIN:-$here/target/release/pasarela}
CALLS=${CALLS:-300}
RATE=${RATE:-10}
SETTLE=${SETTLE:-3}
WARMUP=${WARMUP:-10}
OUT=${OUT:-$(mktemp -d /tmp/callgrind-calls.XXXXXX)}
TOP=${TOP:-25}
RTP_PORTS=${RTP_PORTS:-20000-29999} # the relay's range (another program using it makes calls fail)
mkdir -p "$OUT"
# Under valgrind the relay's epoll wait through io_uring (IORING_OP_EPOLL_WAIT) hangs the
# server before it is ready (a thread sleeps in the ring with valgrind's lock held): the
# relay's I/O threads sleep in epoll_wait instead, and send without io_uring too (both were
# off in the measurements of 2026-12-05). No RTP flows in this scenario.
export PASARELA_MEDIA_EPOLL_RING=${PASARELA_MEDIA_EPOLL_RING:-0}
export PASARELA_MEDIA_URING=${PASARELA_MEDIA_URING:-0}

free_port() {
	python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	# Kamailio's workers: its process group (started with setsid below), never by name.
	if [ -n "${group:-}" ]; then kill -- "-$group" 2>/dev/null || true; fi
}
trap cleanup EXIT

uas_port=$(free_port)
group=
case "$SYSTEM" in
pasarela)
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
rtp_ports = "$RTP_PORTS"
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
	# Instrumentation off until the warm-up: start-up is not per call, and frames entered
	# before instrumentation stay out of the self-cost list.
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
	# Extension 101 registered at the port where sipp's uas then answers (as benches/anchors.rs).
	printf 'SEQUENTIAL\n101;[authentication username=101 password=secret101]\n' >"$OUT/reg.csv"
	sipp "$addr" -sf "$here/benches/sipp/register_load.xml" -inf "$OUT/reg.csv" \
		-i 127.0.0.1 -p "$uas_port" -m 1 -ci 127.0.0.1 -nostdin -timeout 60s -timeout_error \
		>/dev/null 2>&1 || { echo "registering the uas as 101 failed" >&2; exit 1; }
	server_pids() { echo "$vg"; }
	;;
kamailio)
	port=$(free_port)
	addr=127.0.0.1:$port
	# The configuration of benches/anchors.rs (kamailio_config).
	cat >"$OUT/kamailio.cfg" <<EOF
#!KAMAILIO
debug=0
log_stderror=yes
children=2
disable_tcp=yes
auto_aliases=no
alias="office.test"
listen=udp:127.0.0.1:$port
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "auth.so"
loadmodule "dialog.so"

request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (has_totag()) {
        if (loose_route()) { t_relay(); exit; }
        if (is_method("ACK")) {
            if (t_check_trans()) { t_relay(); } else if (!uri==myself) { t_relay(); }
            exit;
        }
        if (!uri==myself) { t_relay(); exit; }
        sl_send_reply("404", "Not here");
        exit;
    }
    if (is_method("CANCEL")) { if (t_check_trans()) { t_relay(); } exit; }
    if (!is_method("INVITE")) { sl_send_reply("405", "Method Not Allowed"); exit; }
    t_check_trans();
    if (!pv_www_authenticate("\$td", "secret100", "0")) { www_challenge("\$td", "1"); exit; }
    consume_credentials();
    dlg_manage();
    record_route();
    \$du = "sip:127.0.0.1:$uas_port";
    t_relay();
}
EOF
	setsid valgrind --tool=callgrind --trace-children=yes --instr-atstart=no \
		--callgrind-out-file="$OUT/callgrind.out.%p" \
		/usr/sbin/kamailio -f "$OUT/kamailio.cfg" -DD -E -m 512 -M 16 -Y "$OUT" \
		-P "$OUT/kamailio.pid" >/dev/null 2>"$OUT/kamailio.log" &
	group=$!
	for _ in $(seq 1 300); do
		[ "$(pgrep -g "$group" | wc -l)" -ge 4 ] && break
		sleep 0.2
	done
	sleep 2
	server_pids() { pgrep -g "$group"; }
	;;
*)
	echo "SYSTEM is pasarela or kamailio" >&2
	exit 1
	;;
esac

sipp -sn uas -i 127.0.0.1 -p "$uas_port" -ci 127.0.0.1 -nostdin -bg -max_socket 1 \
	>"$OUT/uas.out" 2>&1 || true # -bg exits non-zero
uas=$(sed -n 's/.*PID=\[\([0-9]*\)\].*/\1/p' "$OUT/uas.out")
[ -n "$uas" ] && pids+=("$uas")

control() { # callgrind_control with an explicit pid each (never all of the user's processes)
	for p in $(server_pids); do callgrind_control "$@" "$p" >/dev/null 2>&1 || true; done
}

printf 'SEQUENTIAL\n100;[authentication username=100 password=secret100]\n' >"$OUT/callers.csv"
calls() { # calls(count, rate, extra sipp args...)
	local n=$1 r=$2
	shift 2
	sipp "$addr" -sf "$here/benches/sipp/anchor_uac.xml" -inf "$OUT/callers.csv" \
		-s 101 -auth_uri 101@office.test -i 127.0.0.1 -p "$(free_port)" -ci 127.0.0.1 \
		-nostdin -r "$r" -m "$n" -l 1000 -d 0 -max_socket 1 -timeout "$((n / r * 4 + 60))s" \
		"$@" >/dev/null 2>&1 || true
}
control -i on
calls "$WARMUP" 2
sleep "$SETTLE"
control -z
calls "$CALLS" "$RATE" -trace_stat -fd 1 -stf "$OUT/stat.csv"
sleep "$SETTLE"
control -d

col() { # the last value of column $1 of sipp's statistics file
	awk -F';' -v name="$1" 'NR==1{for(i=1;i<=NF;i++) if($i==name) c=i} END{print $c}' "$OUT/stat.csv"
}
ok=$(col 'SuccessfulCall(C)')
failed=$(col 'FailedCall(C)')
retrans=$(col 'Retransmissions(C)')
total() { sed -n 's/^summary: //p;s/^totals: //p' "$1" | head -1; }

# The dumps written by `-d` (callgrind.out.PID.N; the files without a suffix are written at exit).
ir=0
dump=
for f in "$OUT"/callgrind.out.*.*; do
	[ -e "$f" ] || continue
	t=$(total "$f")
	ir=$((ir + ${t:-0}))
	dump=$f
done
echo "$SYSTEM: $ok calls ok, $failed failed, $retrans retransmissions by sipp (rate $RATE/s)"
echo "total Ir: $ir"
echo "Ir per call: $((ir / (ok > 0 ? ok : 1)))"
[ "$SYSTEM" = pasarela ] || exit 0
echo "profile: $dump"
echo
echo "== self cost, top $TOP"
callgrind_annotate --threshold=100 "$dump" 2>/dev/null | sed -n '/file:function/,$p' | sed -n "3,$((TOP + 2))p"
echo
echo "== inclusive cost, top $TOP"
callgrind_annotate --inclusive=yes --threshold=100 "$dump" 2>/dev/null | sed -n '/file:function/,$p' | sed -n "3,$((TOP + 2))p"
