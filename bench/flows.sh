#!/usr/bin/env bash
# bench/flows.sh — time `tcpsentry flows` against `tshark -q -z conv,tcp` and
# argus (`argus -r` then `ra`) on one large generated capture, in one run,
# the tools interleaved. See bench/README.md.
#
# Usage:  bench/flows.sh
# Environment:
#   PACKETS=5000000     packets in the generated capture (the targets need ≥ 5M)
#   CONCURRENT=5000     sessions open at any time in it
#   SEED=1              flowgen seed (same seed and sizes: same file, reused)
#   RUNS=3              timed runs per tool, interleaved, after one untimed check run
#   TOOL_TIMEOUT=900    seconds before one tool run is killed
#   SKIP_TSHARK=1       do not time tshark (it is the slow one: ~100 s per run at 5M)
#   SKIP_ARGUS=1        do not time argus
#   TCPSENTRY_BIN=path  time this binary instead of building ./cmd/tcpsentry
#   SHM=1               copy the capture to /dev/shm for the runs (needs its size in RAM)
#   OUT=bench/out       binaries, the capture and results (gitignored)
# Exit status: 0 all targets met, 1 a target missed, 2 the benchmark itself failed.
set -euo pipefail

PACKETS=${PACKETS:-5000000}
CONCURRENT=${CONCURRENT:-5000}
SEED=${SEED:-1}
RUNS=${RUNS:-3}
TOOL_TIMEOUT=${TOOL_TIMEOUT:-900}
SKIP_TSHARK=${SKIP_TSHARK:-0}
SKIP_ARGUS=${SKIP_ARGUS:-0}
SHM=${SHM:-0}
TARGET_PPS=3000000 # tcpsentry on one core
TARGET_X_TSHARK=10

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$REPO/bench/out}

die() { echo "flows.sh: $*" >&2; exit 2; }
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

for v in PACKETS CONCURRENT SEED RUNS TOOL_TIMEOUT; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done

# ---- tools -------------------------------------------------------------------
# Debian packages: tshark, argus-server (argus), argus-client (ra), time.
need_pkgs=()
[[ $SKIP_TSHARK == 1 ]] || command -v tshark >/dev/null || need_pkgs+=(tshark)
[[ $SKIP_ARGUS == 1 ]] || command -v argus >/dev/null || need_pkgs+=(argus-server)
[[ $SKIP_ARGUS == 1 ]] || command -v ra >/dev/null || need_pkgs+=(argus-client)
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
if (( ${#need_pkgs[@]} )); then
	command -v apt-get >/dev/null || die "missing packages: ${need_pkgs[*]} (no apt-get to install them)"
	log "installing: ${need_pkgs[*]}"
	export DEBIAN_FRONTEND=noninteractive
	timeout 600 apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2 ||
		{ timeout 300 apt-get update >&2 && timeout 600 apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2; } ||
		die "could not install ${need_pkgs[*]}"
fi
command -v go >/dev/null || die "go not found in PATH"

BIN=$OUT/bin
WORK=$OUT/flows-work
mkdir -p "$BIN" "$WORK"

TS_NAME="tcpsentry flows"
if [[ -n ${TCPSENTRY_BIN:-} ]]; then
	TS=$TCPSENTRY_BIN
	[[ -x $TS ]] || die "TCPSENTRY_BIN=$TS is not executable"
else
	log "building tcpsentry"
	TS=$BIN/tcpsentry
	(cd "$REPO" && go build -o "$TS" ./cmd/tcpsentry) || die "building ./cmd/tcpsentry failed"
fi
"$TS" flows --help >/dev/null 2>&1 || die "$TS has no working 'flows' subcommand"
TS_CMD=("$TS" flows --format zeek --no-progress --stats)

# ---- the capture ---------------------------------------------------------------
PCAP=$OUT/flows-${PACKETS}-c${CONCURRENT}-s${SEED}.pcap
GEN_ID="$(cd "$REPO" && sha256sum bench/flowgen/main.go | cut -c1-16) $PACKETS $CONCURRENT $SEED"
if [[ -f $PCAP && -f $PCAP.id && $(cat "$PCAP.id") == "$GEN_ID" ]]; then
	log "reusing $PCAP"
else
	log "generating $PCAP ($PACKETS packets)"
	(cd "$REPO" && go build -o "$BIN/flowgen" ./bench/flowgen) || die "building bench/flowgen failed"
	rm -f "$PCAP.id"
	"$BIN/flowgen" -o "$PCAP" -packets "$PACKETS" -concurrent "$CONCURRENT" -seed "$SEED" 2>"$WORK/flowgen.log" ||
		die "flowgen failed: $(cat "$WORK/flowgen.log")"
	echo "$GEN_ID" >"$PCAP.id"
fi
INPUT=$PCAP
if [[ $SHM == 1 ]]; then
	INPUT=/dev/shm/tcpsentry-flows-bench-$$.pcap
	trap 'rm -f "$INPUT"' EXIT
	cp "$PCAP" "$INPUT" || die "copying the capture to /dev/shm failed"
fi
SIZE=$(stat -c %s "$INPUT")

# warm reads the capture so that every tool starts with it in the page cache.
warm() { [[ $SHM == 1 ]] || cat "$INPUT" >/dev/null; }

# ---- running and timing --------------------------------------------------------
TOOLS=(ts1 tsall)
[[ $SKIP_TSHARK == 1 ]] || TOOLS+=(tshark)
[[ $SKIP_ARGUS == 1 ]] || TOOLS+=(argus)
declare -A LABEL=([ts1]="$TS_NAME, 1 core (taskset -c 0)" [tsall]="$TS_NAME, all cores"
	[tshark]="tshark -n -q -z conv,tcp" [argus]="argus -r, then ra")

# timed CMD...: runs CMD under GNU time and timeout; sets T_WALL T_CPU T_RSS (KiB).
timed() {
	local rc=0
	/usr/bin/time -f '%e %U %S %M' -o "$WORK/time" timeout -k 5 "$TOOL_TIMEOUT" "$@" || rc=$?
	read -r T_WALL T_CPU T_RSS < <(tail -n 1 "$WORK/time" | awk 'NF == 4 { printf "%s %.2f %s\n", $1, $2 + $3, $4 }') || true
	return $rc
}

# run TOOL: one run of a tool; sets R_WALL R_CPU R_RSS. Output goes to
# files in $WORK, as a user would keep it.
run() {
	case $1 in
	ts1) timed taskset -c 0 "${TS_CMD[@]}" "$INPUT" >"$WORK/ts.out" 2>"$WORK/ts.err" || return 1 ;;
	tsall) timed "${TS_CMD[@]}" "$INPUT" >"$WORK/ts.out" 2>"$WORK/ts.err" || return 1 ;;
	tshark) timed tshark -n -q -z conv,tcp -r "$INPUT" >"$WORK/tshark.out" 2>"$WORK/tshark.err" || return 1 ;;
	argus)
		rm -f "$WORK/out.argus"
		timed argus -X -r "$INPUT" -w "$WORK/out.argus" 2>"$WORK/argus.err" || return 1
		local w=$T_WALL c=$T_CPU r=$T_RSS
		timed ra -n -r "$WORK/out.argus" >"$WORK/ra.out" 2>"$WORK/ra.err" || return 1
		T_WALL=$(awk -v a="$w" -v b="$T_WALL" 'BEGIN { printf "%.2f", a + b }')
		T_CPU=$(awk -v a="$c" -v b="$T_CPU" 'BEGIN { printf "%.2f", a + b }')
		T_RSS=$(( r > T_RSS ? r : T_RSS ))
		ARGUS_ONLY=$w
		;;
	esac
	R_WALL=$T_WALL R_CPU=$T_CPU R_RSS=$T_RSS
}

median() { # numbers on stdin → median, or NA
	sort -g | awk '{a[NR]=$1} END { if (NR == 0) print "NA"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.6g\n", (a[NR/2]+a[NR/2+1])/2 }'
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b + 0 == 0) print "NA"; else printf "%.6g", a / b }'; }
fmt_int() { # 1234567.8 → 1,234,568
	awk -v x="$1" 'BEGIN { if (x == "NA") { print "-"; exit } s = sprintf("%.0f", x); r = ""
		while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) } print s r }'
}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUNS_TSV=$OUT/flows-$STAMP.tsv
TXT=$OUT/flows-$STAMP.txt
printf 'run\ttool\twall_s\tcpu_s\trss_kib\n' >"$RUNS_TSV"

{
	echo "bench/flows.sh $STAMP on $(hostname): $(nproc) cpus, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "capture: $PCAP ($((SIZE >> 20)) MiB, $PACKETS packets, $CONCURRENT concurrent sessions, seed $SEED)$([[ $SHM == 1 ]] && echo ", read from /dev/shm")"
	echo "tools: ${TS_CMD[*]}$([[ $SKIP_TSHARK == 1 ]] || echo "; $(tshark -v 2>/dev/null | head -n1)")$([[ $SKIP_ARGUS == 1 ]] || echo "; $(argus -h 2>&1 | awk '/Version/ {print "argus " $3; exit}')")"
} | tee "$TXT" >&2

# Check run: every tool once, untimed; tcpsentry must have seen every packet.
log "check run"
for t in ts1 "${TOOLS[@]:2}"; do
	warm
	run "$t" || die "${LABEL[$t]} failed in the check run: $(tail -n 3 "$WORK"/*.err 2>/dev/null | tail -n 5)"
done
seen=$(grep -Eo '[0-9]+ packets' "$WORK/ts.err" | head -n1 | cut -d' ' -f1)
[[ $seen == "$PACKETS" ]] || die "tcpsentry saw ${seen:-no} packets, the capture has $PACKETS (stderr: $(head -c 300 "$WORK/ts.err"))"
declare -A ROWS=([ts1]=$(grep -vc '^#' "$WORK/ts.out" || true))
ROWS[tsall]=${ROWS[ts1]}
[[ $SKIP_TSHARK == 1 ]] || ROWS[tshark]=$(grep -c '<->' "$WORK/tshark.out" || true)
[[ $SKIP_ARGUS == 1 ]] || ROWS[argus]=$(($(wc -l <"$WORK/ra.out") - 1))

# Timed runs, round-robin; the first tool rotates each run.
declare -A WALLS CPUS RSSS
for ((r = 1; r <= RUNS; r++)); do
	n=${#TOOLS[@]}
	for ((i = 0; i < n; i++)); do
		t=${TOOLS[$(((i + r - 1) % n))]}
		warm
		if run "$t"; then
			log "run $r/$RUNS: ${LABEL[$t]}: ${R_WALL} s wall, ${R_CPU} s cpu, $((R_RSS >> 10)) MiB"
			WALLS[$t]+="$R_WALL " CPUS[$t]+="$R_CPU " RSSS[$t]+="$R_RSS "
			printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$R_WALL" "$R_CPU" "$R_RSS" >>"$RUNS_TSV"
		else
			log "run $r/$RUNS: ${LABEL[$t]} failed or timed out"
			printf '%s\t%s\tNA\tNA\tNA\n' "$r" "$t" >>"$RUNS_TSV"
		fi
	done
done

# ---- report ----------------------------------------------------------------------
declare -A MW MC MR PPS PPC
for t in "${TOOLS[@]}"; do
	MW[$t]=$(tr ' ' '\n' <<<"${WALLS[$t]:-}" | grep . | median)
	MC[$t]=$(tr ' ' '\n' <<<"${CPUS[$t]:-}" | grep . | median)
	MR[$t]=$(tr ' ' '\n' <<<"${RSSS[$t]:-}" | grep . | median)
	PPS[$t]=$(div "$PACKETS" "${MW[$t]}")
	PPC[$t]=$(div "$PACKETS" "${MC[$t]}")
done
ratio() { # tool ref → "12.3×" of packets/s, or -
	local x
	[[ -n ${PPS[$2]:-} ]] || { echo "-"; return; }
	x=$(div "${PPS[$1]}" "${PPS[$2]}")
	[[ $x == NA ]] && echo "-" || printf '%.1f×\n' "$x"
}
{
	echo
	printf '%-44s %9s %12s %9s %14s %9s %9s %9s %8s\n' tool "wall s" "packets/s" "cpu s" "packets/cpu-s" "RSS MiB" "×tshark" "×argus" records
	for t in "${TOOLS[@]}"; do
		printf '%-44s %9s %12s %9s %14s %9s %9s %9s %8s\n' "${LABEL[$t]}" "${MW[$t]}" "$(fmt_int "${PPS[$t]}")" "${MC[$t]}" \
			"$(fmt_int "${PPC[$t]}")" "$(awk -v k="${MR[$t]}" 'BEGIN { if (k == "NA") print "-"; else printf "%.0f", k / 1024 }')" \
			"$(ratio "$t" tshark)" "$(ratio "$t" argus)" "${ROWS[$t]:-}"
	done
	[[ $SKIP_ARGUS == 1 ]] || echo "(argus alone, last run: ${ARGUS_ONLY:-?} s; records: tcpsentry conn records, tshark TCP conversations, ra lines)"
	echo "medians of $RUNS runs; packets/s = $PACKETS packets / median wall; cpu = user + system; load after: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
} | tee -a "$TXT" >&2

status=0
verdict() { # name ok(1/0/NA) text
	local v=PASS
	case $2 in 0) v=FAIL status=1 ;; NA) v=SKIPPED ;; esac
	printf '%-7s %s\n' "$v" "$3" | tee -a "$TXT" >&2
}
ok=$(awk -v p="${PPS[ts1]}" -v t=$TARGET_PPS 'BEGIN { if (p == "NA") print "NA"; else print (p >= t) ? 1 : 0 }')
verdict pps "$ok" "tcpsentry on one core: $(fmt_int "${PPS[ts1]}") packets/s (target ≥ $(fmt_int $TARGET_PPS); per cpu-second $(fmt_int "${PPC[ts1]}"))"
if [[ $SKIP_TSHARK != 1 ]]; then
	x=$(div "${PPS[ts1]}" "${PPS[tshark]}")
	ok=$(awk -v x="$x" -v t=$TARGET_X_TSHARK 'BEGIN { if (x == "NA") print "NA"; else print (x >= t) ? 1 : 0 }')
	verdict tshark "$ok" "tcpsentry on one core vs tshark: $(ratio ts1 tshark) the packets/s (target ≥ ${TARGET_X_TSHARK}×)"
else
	verdict tshark NA "tcpsentry vs tshark (SKIP_TSHARK=1)"
fi
(( PACKETS >= 5000000 )) || echo "note: PACKETS=$PACKETS is below the 5M the targets are stated for" | tee -a "$TXT" >&2

ln -sf "$(basename "$TXT")" "$OUT/flows-latest.txt"
ln -sf "$(basename "$RUNS_TSV")" "$OUT/flows-latest.tsv"
log "results: $TXT, $RUNS_TSV"
exit $status
