#!/usr/bin/env bash
# bench/conns.sh — time `tcpsentry conns` against ss, netstat and lsof on a
# known number of ESTABLISHED loopback connections, in one run, in a fresh
# network namespace per size. See bench/README.md.
#
# Usage (root):  bench/conns.sh
# Environment:
#   SIZES="1000 10000 50000"  connections per size (each connection = 2 sockets,
#                             both ends in the namespace)
#   RUNS=5                    timed runs per tool (after 1 untimed check run)
#   TOOL_TIMEOUT=120          seconds before one tool run is killed ("timeout")
#   READY_TIMEOUT=180         seconds to establish all connections of one size
#   HOLDERS_MIN=12            minimum holder processes per size
#   PER_HOLDER_MAX=4500       connections dialled per holder (it accepts about
#                             as many: ≤ 9,000 fds under the 20,000 limit)
#   SKIP_TCPSENTRY=1          do not build or time tcpsentry
#   TCPSENTRY_BIN=path        time this binary instead of building ./cmd/tcpsentry
#   OUT=bench/out             where binaries and results go
# Exit status: 0 all targets met (or not measured), 1 a target failed,
#              2 the benchmark itself failed.
set -euo pipefail

SIZES=${SIZES:-"1000 10000 50000"}
RUNS=${RUNS:-5}
TOOL_TIMEOUT=${TOOL_TIMEOUT:-120}
READY_TIMEOUT=${READY_TIMEOUT:-180}
HOLDERS_MIN=${HOLDERS_MIN:-12}
PER_HOLDER_MAX=${PER_HOLDER_MAX:-4500}
SKIP_TCPSENTRY=${SKIP_TCPSENTRY:-0}
BASE_PORT=61000              # listeners: 61000+i, above the ephemeral range set below
EPHEMERAL="1024 60999"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$REPO/bench/out}

die() { echo "conns.sh: $*" >&2; exit 2; }
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[[ $EUID -eq 0 ]] || die "must run as root: it creates a network namespace and reads every process's /proc/PID/fd (try: sudo $0)"
for v in RUNS TOOL_TIMEOUT READY_TIMEOUT HOLDERS_MIN PER_HOLDER_MAX; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
(( PER_HOLDER_MAX <= 9000 )) || die "PER_HOLDER_MAX must be ≤ 9000 (2 fds per connection, 20,000 fd limit)"
for s in $SIZES; do [[ $s =~ ^[1-9][0-9]*$ ]] || die "SIZES: '$s' is not a positive integer"; done

# ---- tools -------------------------------------------------------------------
need_pkgs=()
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v ss >/dev/null || need_pkgs+=(iproute2)
command -v netstat >/dev/null || need_pkgs+=(net-tools)
command -v lsof >/dev/null || need_pkgs+=(lsof)
command -v sysctl >/dev/null || need_pkgs+=(procps)
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
if (( ${#need_pkgs[@]} )); then
	command -v apt-get >/dev/null || die "missing packages: ${need_pkgs[*]} (no apt-get to install them)"
	log "installing: ${need_pkgs[*]}"
	timeout 600 apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2 ||
		{ timeout 300 apt-get update >&2 && timeout 600 apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2; } ||
		die "could not install ${need_pkgs[*]}"
fi
command -v timeout >/dev/null || die "coreutils timeout missing"
command -v go >/dev/null || die "go not found in PATH"

BIN=$OUT/bin
mkdir -p "$BIN"
log "building connholder"
(cd "$REPO" && go build -o "$BIN/connholder" ./bench/connholder) || die "building bench/connholder failed"
TS=""
if [[ $SKIP_TCPSENTRY != 1 ]]; then
	if [[ -n ${TCPSENTRY_BIN:-} ]]; then
		TS=$TCPSENTRY_BIN
		[[ -x $TS ]] || die "TCPSENTRY_BIN=$TS is not executable"
	else
		log "building tcpsentry"
		TS=$BIN/tcpsentry
		(cd "$REPO" && go build -o "$TS" ./cmd/tcpsentry) ||
			die "building ./cmd/tcpsentry failed; run with SKIP_TCPSENTRY=1 to benchmark the other tools only"
	fi
	"$TS" conns --help >/dev/null 2>&1 || die "$TS has no working 'conns' subcommand; run with SKIP_TCPSENTRY=1"
fi

# name|command; the check and the round-robin keep this order (rotated per run).
TOOLS=()
if [[ -n $TS ]]; then
	TOOLS+=("tcpsentry conns|$TS conns" "tcpsentry conns --json|$TS conns --json")
fi
TOOLS+=("ss -tanp|ss -tanp" "ss -tan|ss -tan" "netstat -tanp|netstat -tanp" "lsof -nPi TCP|lsof -nPi TCP"
	"(harness: true)|true")
NT=${#TOOLS[@]}

# ---- state and cleanup -------------------------------------------------------
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d /tmp/tcpsentry-bench.XXXXXX)
NS=""
HOLDER_PIDS=()
FIFO_OPEN=0

stop_holders() {
	local pid alive i
	if (( FIFO_OPEN )); then exec 9>&-; FIFO_OPEN=0; fi   # stdin EOF for every holder
	(( ${#HOLDER_PIDS[@]} )) || return 0
	for pid in "${HOLDER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for (( i = 0; i < 100; i++ )); do                       # ≤ 10 s
		alive=0
		for pid in "${HOLDER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		(( alive )) || break
		sleep 0.1
	done
	for pid in "${HOLDER_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	for pid in "${HOLDER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	HOLDER_PIDS=()
}

delete_ns() {
	if [[ -n $NS ]]; then
		ip netns del "$NS" 2>/dev/null || true
		NS=""
	fi
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	stop_holders
	delete_ns
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

# A run killed with SIGKILL cannot delete its namespace (its holders still exit:
# their stdin reaches EOF). Remove such leftovers: ours by name, owner gone.
while read -r ns _; do
	if [[ $ns =~ ^tcpsentry-bench-([0-9]+)-[0-9]+$ ]] && ! kill -0 "${BASH_REMATCH[1]}" 2>/dev/null; then
		log "removing stale namespace $ns"
		ip netns del "$ns" 2>/dev/null || true
	fi
done < <(ip netns list 2>/dev/null)

# ---- helpers -----------------------------------------------------------------
median() { # numbers on stdin → median, or NA
	sort -g | awk '{a[NR]=$1} END { if (NR == 0) print "NA"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.6g\n", (a[NR/2]+a[NR/2+1])/2 }'
}

# run_tool NAME-INDEX OUTFILE → sets R_WALL (s), R_CPU (user+sys s), R_RSS (KiB),
# R_STATUS (ok|timeout|error:N)
run_tool() {
	local cmd=${TOOLS[$1]#*|} out=$2 argv rc t0 t1
	read -r -a argv <<<"$cmd"
	rm -f "$WORK/time"
	t0=$EPOCHREALTIME
	set +e
	ip netns exec "$NS" /usr/bin/time -f '%e %M %U %S' -o "$WORK/time" \
		timeout -k 5 "$TOOL_TIMEOUT" "${argv[@]}" >"$out" 2>"$WORK/stderr" 9>&-
	rc=$?
	set -e
	t1=$EPOCHREALTIME
	R_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
	read -r R_RSS R_CPU < <(tail -n 1 "$WORK/time" 2>/dev/null | awk 'NF == 4 { printf "%s %.2f\n", $2, $3 + $4 }') || true
	R_RSS=${R_RSS:-NA} R_CPU=${R_CPU:-NA}
	case $rc in
	0) R_STATUS=ok ;;
	124 | 137) R_STATUS=timeout ;;
	*) R_STATUS=error:$rc ;;
	esac
}

fmt_ratio() { # a b → a/b with 3 decimals, or "-"
	awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b + 0 == 0) print "-"; else printf "%.3f", a / b }'
}

# ---- results files -----------------------------------------------------------
mkdir -p "$OUT"
RAW=$OUT/conns-$STAMP.tsv
SUM_TSV=$OUT/conns-$STAMP-summary.tsv
JSON=$OUT/conns-$STAMP.json
TXT=$OUT/conns-$STAMP.txt
printf 'size\tsockets\tholders\ttool\trun\twall_s\tcpu_s\tpeak_rss_kib\tstatus\n' >"$RAW"
printf 'size\tsockets\ttool\truns_ok\tmedian_wall_s\tmin_wall_s\tmedian_cpu_s\tmedian_rss_mib\tratio_ss_tanp\tratio_ss_tan\trows\tattributed\tstatus\n' >"$SUM_TSV"
: >"$TXT"
JSON_SIZES=()
OVERALL=0   # 0 pass/not measured, 1 fail

git_rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)
git -C "$REPO" diff --quiet HEAD -- 2>/dev/null || git_rev="$git_rev+dirty"
{
	echo "tcpsentry conns benchmark  $STAMP  rev $git_rev"
	echo "host: $(uname -r), $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg), runs=$RUNS, tool timeout=${TOOL_TIMEOUT}s"
	echo "tools: $(ss -V 2>&1 | head -n1); $(netstat -V 2>&1 | head -n1); lsof $(lsof -v 2>&1 | awk '/revision/ {print $2; exit}')"
} | tee -a "$TXT"

# ---- one size ----------------------------------------------------------------
bench_size() {
	local N=$1 P i n_i acc prev next lifetime count deadline ready dead r k t name
	P=$(( (N + PER_HOLDER_MAX - 1) / PER_HOLDER_MAX ))
	(( P < HOLDERS_MIN )) && P=$HOLDERS_MIN
	(( P > 4000 )) && die "too many holders ($P)"
	local sockets=$(( 2 * N ))

	NS=tcpsentry-bench-$$-$N
	log "size $N: namespace $NS, $P holder processes, $sockets sockets"
	ip netns add "$NS" || { NS=""; die "ip netns add failed"; }
	ip -n "$NS" link set lo up
	ip netns exec "$NS" sysctl -qw net.core.somaxconn=65535
	ip netns exec "$NS" sysctl -qw net.ipv4.ip_local_port_range="$EPHEMERAL"
	ip netns exec "$NS" sysctl -qw net.ipv4.tcp_max_syn_backlog=65535 2>/dev/null || true

	# Holders live at most as long as this size can take, plus slack.
	lifetime=$(( READY_TIMEOUT + (RUNS + 1) * NT * (TOOL_TIMEOUT + 10) + 120 ))
	mkfifo "$WORK/stdin-$N"
	exec 9<>"$WORK/stdin-$N"
	FIFO_OPEN=1
	# Ring: holder i listens on BASE+i, dials n_i connections to holder i+1 and
	# accepts n_{i-1} from holder i-1, so each process owns client and server ends.
	for (( i = 0; i < P; i++ )); do
		n_i=$(( N / P + (i < N % P ? 1 : 0) ))
		prev=$(( (i + P - 1) % P ))
		acc=$(( N / P + (prev < N % P ? 1 : 0) ))
		next=$(( (i + 1) % P ))
		ip netns exec "$NS" "$BIN/connholder" \
			-listen "127.0.0.1:$(( BASE_PORT + i ))" -accept "$acc" \
			-dial "127.0.0.1:$(( BASE_PORT + next ))" -n "$n_i" \
			-setup-timeout "${READY_TIMEOUT}s" -max-lifetime "${lifetime}s" \
			<"$WORK/stdin-$N" >"$WORK/holder-$i.out" 2>"$WORK/holder-$i.err" 9>&- &
		HOLDER_PIDS+=($!)
	done

	deadline=$(( SECONDS + READY_TIMEOUT + 10 ))
	while :; do
		ready=0 dead=""
		for (( i = 0; i < P; i++ )); do
			if grep -q '^ready' "$WORK/holder-$i.out" 2>/dev/null; then
				ready=$(( ready + 1 ))
			elif ! kill -0 "${HOLDER_PIDS[$i]}" 2>/dev/null; then
				dead=$i
				break
			fi
		done
		[[ -z $dead ]] || die "holder $dead exited before ready: $(head -c 500 "$WORK/holder-$dead.err")"
		(( ready == P )) && break
		(( SECONDS < deadline )) || die "only $ready of $P holders ready after ${READY_TIMEOUT}s"
		sleep 0.2
	done
	count=$(ip netns exec "$NS" ss -tanH state established 9>&- | wc -l)
	(( count == sockets )) || die "expected $sockets ESTABLISHED sockets in $NS, ss counts $count"
	log "size $N: $count ESTABLISHED sockets held by $P processes (pids ${HOLDER_PIDS[0]}..${HOLDER_PIDS[P-1]})"
	local load
	load=$(cut -d' ' -f1-3 /proc/loadavg)

	# Untimed check (and warm-up) run of every tool: rows and process attribution.
	local -a status rows attr walls rsss cpus
	for (( k = 0; k < NT; k++ )); do
		name=${TOOLS[$k]%%|*}
		run_tool "$k" "$WORK/check.out"
		status[k]=$R_STATUS
		rows[k]=$(wc -l <"$WORK/check.out")
		attr[k]=$(grep -c 'connholde' "$WORK/check.out" || true)   # lsof truncates COMMAND to 9 chars
		walls[k]="" rsss[k]="" cpus[k]=""
		log "  check $name: ${R_WALL}s, cpu ${R_CPU}s, ${R_RSS} KiB, $R_STATUS, ${rows[k]} lines, ${attr[k]} attributed to connholder"
		if [[ $R_STATUS == error:* ]]; then
			log "  $name failed: $(head -c 300 "$WORK/stderr")"
		fi
	done

	# Timed runs, round-robin, start rotated each run so no tool always follows
	# the same one. A tool that timed out or failed is not run again.
	for (( r = 1; r <= RUNS; r++ )); do
		for (( t = 0; t < NT; t++ )); do
			k=$(( (t + r - 1) % NT ))
			[[ ${status[k]} == ok ]] || continue
			name=${TOOLS[$k]%%|*}
			run_tool "$k" /dev/null
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$N" "$sockets" "$P" "$name" "$r" "$R_WALL" "$R_CPU" "$R_RSS" "$R_STATUS" >>"$RAW"
			if [[ $R_STATUS == ok ]]; then
				walls[k]+="$R_WALL "
				rsss[k]+="$R_RSS "
				cpus[k]+="$R_CPU "
			else
				status[k]=$R_STATUS
				log "  run $r $name: $R_STATUS"
			fi
		done
		log "  run $r of $RUNS done"
	done

	stop_holders
	delete_ns
	rm -f "$WORK/stdin-$N"

	# Summary.
	local -a med_w med_m nok min_w med_c
	local ref_p=NA ref_t=NA
	for (( k = 0; k < NT; k++ )); do
		nok[k]=$(wc -w <<<"${walls[k]}")
		med_w[k]=$(tr ' ' '\n' <<<"${walls[k]}" | grep . | median || true)
		min_w[k]=$(tr ' ' '\n' <<<"${walls[k]}" | grep . | sort -g | head -n 1 || true)
		min_w[k]=${min_w[k]:-NA}
		med_c[k]=$(tr ' ' '\n' <<<"${cpus[k]}" | grep -E '^[0-9.]+$' | median || true)
		med_m[k]=$(tr ' ' '\n' <<<"${rsss[k]}" | grep . | awk '$1 != "NA" { printf "%.1f\n", $1 / 1024 }' | median || true)
		[[ ${status[k]} == ok ]] || { med_w[k]=NA; med_m[k]=NA; min_w[k]=NA; med_c[k]=NA; }
		case ${TOOLS[$k]%%|*} in
		"ss -tanp") ref_p=${med_w[k]} ;;
		"ss -tan") ref_t=${med_w[k]} ;;
		esac
	done
	{
		echo
		echo "== $N connections = $sockets ESTABLISHED sockets, $P holder processes; median of $RUNS runs; load before: $load =="
		printf '%-24s %9s %8s %8s %8s %10s %9s %7s %10s\n' tool "wall s" "min s" "cpu s" "RSS MiB" "x ss-tanp" "x ss-tan" lines attributed
		for (( k = 0; k < NT; k++ )); do
			name=${TOOLS[$k]%%|*}
			local wcol=${med_w[k]}
			case ${status[k]} in
			timeout) wcol=">${TOOL_TIMEOUT} (timeout)" ;;
			error:*) wcol=${status[k]} ;;
			esac
			printf '%-24s %9s %8s %8s %8s %10s %9s %7s %10s\n' "$name" "$wcol" "${min_w[k]}" "${med_c[k]}" "${med_m[k]}" \
				"$(fmt_ratio "${med_w[k]}" "$ref_p")" "$(fmt_ratio "${med_w[k]}" "$ref_t")" "${rows[k]}" "${attr[k]}"
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$N" "$sockets" "$name" "${nok[k]}" "${med_w[k]}" "${min_w[k]}" "${med_c[k]}" "${med_m[k]}" \
				"$(fmt_ratio "${med_w[k]}" "$ref_p")" "$(fmt_ratio "${med_w[k]}" "$ref_t")" "${rows[k]}" "${attr[k]}" "${status[k]}" >>"$SUM_TSV"
		done
	} | tee -a "$TXT"

	# Targets (the issue): 50k ≤ 0.1× ss -tanp and RSS < 150 MiB; 10k ≤ 0.3× ss -tanp.
	local verdict="n/a" detail="no target at this size" maxr="" maxm=""
	case $N in
	50000) maxr=0.1 maxm=150 ;;
	10000) maxr=0.3 ;;
	esac
	if [[ -n $maxr ]]; then
		if [[ -z $TS ]]; then
			verdict=SKIPPED detail="tcpsentry not measured (SKIP_TCPSENTRY=1)"
		else
			local ratio=$(fmt_ratio "${med_w[0]}" "$ref_p")
			detail="tcpsentry conns ${med_w[0]} s = ${ratio}x ss -tanp (target <= ${maxr}x)"
			verdict=PASS
			if [[ $ratio == - ]] || ! awk -v a="$ratio" -v b="$maxr" 'BEGIN { exit !(a <= b) }'; then verdict=FAIL; fi
			if [[ -n $maxm ]]; then
				detail+=", peak RSS ${med_m[0]} MiB (target < ${maxm} MiB)"
				if [[ ${med_m[0]} == NA ]] || ! awk -v a="${med_m[0]}" -v b="$maxm" 'BEGIN { exit !(a < b) }'; then verdict=FAIL; fi
			fi
			[[ $ref_p == NA ]] && detail+=" [ss -tanp did not finish within ${TOOL_TIMEOUT}s]"
		fi
	fi
	[[ $verdict == FAIL ]] && OVERALL=1
	echo "$verdict  size $N: $detail" | tee -a "$TXT"

	# JSON for this size.
	local tj="" sep=""
	for (( k = 0; k < NT; k++ )); do
		tj+=$(printf '%s{"tool":"%s","status":"%s","runs_ok":%s,"median_wall_s":%s,"min_wall_s":%s,"median_cpu_s":%s,"median_peak_rss_mib":%s,"ratio_vs_ss_tanp":%s,"ratio_vs_ss_tan":%s,"lines":%s,"attributed":%s,"walls_s":[%s]}' \
			"$sep" "${TOOLS[$k]%%|*}" "${status[k]}" "${nok[k]}" "$(jnum "${med_w[k]}")" "$(jnum "${min_w[k]}")" "$(jnum "${med_c[k]}")" "$(jnum "${med_m[k]}")" \
			"$(jnum "$(fmt_ratio "${med_w[k]}" "$ref_p")")" "$(jnum "$(fmt_ratio "${med_w[k]}" "$ref_t")")" \
			"${rows[k]}" "${attr[k]}" "$(tr -s ' ' ',' <<<"${walls[k]% }")")
		sep=","
	done
	JSON_SIZES+=("$(printf '{"connections":%s,"sockets":%s,"holders":%s,"load_before":"%s","verdict":"%s","detail":"%s","tools":[%s]}' \
		"$N" "$sockets" "$P" "$load" "$verdict" "$detail" "$tj")")
}

jnum() { [[ $1 =~ ^[0-9.]+$ ]] && echo "$1" || echo null; }

for N in $SIZES; do
	bench_size "$N"
done

{
	printf '{"stamp":"%s","rev":"%s","kernel":"%s","cpus":%s,"runs":%s,"tool_timeout_s":%s,"sizes":[' \
		"$STAMP" "$git_rev" "$(uname -r)" "$(nproc)" "$RUNS" "$TOOL_TIMEOUT"
	sep=""
	for s in "${JSON_SIZES[@]}"; do printf '%s%s' "$sep" "$s"; sep=","; done
	printf ']}\n'
} >"$JSON"
for f in "$RAW:tsv" "$SUM_TSV:summary.tsv" "$JSON:json" "$TXT:txt"; do
	ln -sfn "$(basename "${f%:*}")" "$OUT/conns-latest.${f##*:}"
done
log "results: $TXT, $JSON, $SUM_TSV, $RAW"
exit "$OVERALL"
