#!/usr/bin/env bash
# Records the fleet scenario as real traffic: a small routed network of
# network namespaces with three sentry hosts, an "external" host and a
# scanner, and one tcpdump per sentry host on its eth0. It writes
# OUTDIR/sentry-a.pcap, sentry-b.pcap and sentry-c.pcap, which
# internal/fleet's tests read (recorded_test.go checks what they contain).
#
#   lab/fleet-record.sh [OUTDIR]   default OUTDIR: internal/fleet/testdata/recorded
#
# Needs root, iproute2, ethtool, ncat, nmap, tcpdump and timeout
# (apt-get install -y iproute2 ethtool ncat nmap tcpdump). Takes about 30 s.
#
# The network (addresses are fixed: the tests rely on them):
#
#   sentry-a 10.0.1.10/24 --.
#   sentry-b 10.0.2.10/24 ---+-- router (.1 on each subnet, ip_forward=1)
#   sentry-c 10.0.3.10/24 ---+
#   ext      203.0.113.7/24 -+   (aliases 203.0.113.20-25)
#   scanner  198.51.100.9/24 '
#
# Every host's default route points at the router namespace, which has no
# link and no route to anything else: traffic stays inside the namespaces
# this script creates. IPv6 is off in them (no router solicitations or MLD
# in the captures), and checksum and segmentation offloads are off on every
# veth, so the captures hold wire-sized packets with filled-in checksums.
# tcpdump keeps whole packets (-s 1600): the tests expect no content gaps.
#
# Traffic, in this order, recorded on each sentry's eth0 from the start:
#  1. beacons: each sentry connects to 203.0.113.7:443 six times, 2 s apart
#     (±100 ms), sends 300 bytes, reads a 400-byte reply, both sides close
#     with FIN (the server first); the three sentries run concurrently,
#     0.3 s apart;
#  2. a SYN scan: nmap -sS -Pn -n --max-retries 0 -p 1001-1010 from the
#     scanner against each sentry in turn (closed ports: RST answers);
#  3. a lateral-movement chain: sentry-a to 10.0.2.10:22 (4000 bytes up,
#     a banner and 9000 bytes down), then ~3 s later sentry-b to
#     10.0.3.10:445 (2000 up, 3000 down);
#  4. background: each sentry makes 3 HTTP-like connections to port 80 of
#     the ext aliases and one UDP exchange with port 53 of one alias. No
#     background destination (proto, address, port) is contacted by more
#     than two sentries, so only the beacon destination is fleet-wide.
#
# The clients are ncat with --no-shutdown: ncat's --sh-exec server drops a
# connection as soon as the client half-closes, before its answer is
# written, so the client waits for the server's FIN before sending its own.
# Each client must read the whole answer, and nmap must find the 10 ports
# closed, or the script fails without writing the pcaps.
#
# Every loop is bounded in count, every command in time (timeout); the
# processes and namespaces are removed on exit, by PID and by name.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../internal/fleet/testdata/recorded"}

[[ $(id -u) == 0 ]] || { echo "lab/fleet-record.sh: needs root (network namespaces)" >&2; exit 2; }
for t in ip ethtool ncat nmap tcpdump timeout sysctl; do
	command -v "$t" >/dev/null || { echo "lab/fleet-record.sh: $t is not installed" >&2; exit 2; }
done

tag=tsf$$
work=$(mktemp -d)
pids=()
namespaces=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	# Whatever is left in our namespaces (ncat's --sh-exec children) is ours.
	for n in "${namespaces[@]}"; do
		for p in $(ip netns pids "$n" 2>/dev/null); do kill "$p" 2>/dev/null; done
	done
	for n in "${namespaces[@]}"; do ip netns del "$n" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "fleet-record: $*" >&2; }
msleep() { sleep "$(($1 / 1000)).$(printf %03d $(($1 % 1000)))"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ---- the network: a router namespace, one veth per host -----------------------
nsinit() { # nsinit NS: a new namespace, loopback up, no IPv6
	ip netns add "$1"
	namespaces+=("$1")
	ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null || true
	ip -n "$1" link set lo up
}
rt=${tag}rt
nsinit "$rt"
ip netns exec "$rt" sysctl -qw net.ipv4.ip_forward=1

host() { # host NAME ADDR GATEWAY: namespace $tag$NAME with eth0 = ADDR/24, linked to the router
	local ns=$tag$1 dev=$tag$1
	nsinit "$ns"
	ip link add "$dev" netns "$rt" type veth peer name eth0 netns "$ns"
	ip -n "$rt" addr add "$3/24" dev "$dev"
	ip -n "$rt" link set "$dev" up
	ip -n "$ns" addr add "$2/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" route add default via "$3"
	# Wire-like packets: no checksum or segmentation offloads on either end
	# (the captures hold filled-in checksums and wire-sized segments).
	ip netns exec "$ns" ethtool -K eth0 tx off tso off gso off gro off >/dev/null
	ip netns exec "$rt" ethtool -K "$dev" tx off tso off gso off gro off >/dev/null
}
sentries=(a b c)
host a 10.0.1.10 10.0.1.1
host b 10.0.2.10 10.0.2.1
host c 10.0.3.10 10.0.3.1
host ext 203.0.113.7 203.0.113.1
host scan 198.51.100.9 198.51.100.1
for k in $(seq 20 25); do ip -n "${tag}ext" addr add "203.0.113.$k/24" dev eth0; done

nsx() { local ns=$tag$1; shift; ip netns exec "$ns" "$@"; }
serve() { # serve NS [ncat args...]: a listener in the background, bounded in time
	local ns=$tag$1
	shift
	# A simple command, not a function, so that $! is the process itself
	# (ip netns exec execs timeout) and killing it stops the listener.
	ip netns exec "$ns" timeout 300 ncat "$@" >/dev/null 2>>"$work/ncat.err" &
	pids+=($!)
}
listening() { # listening NS PROTO(t|u) ADDR:PORT: wait until something listens there
	for _ in $(seq 50); do
		nsx "$1" ss -"$2"lnH "src $3" | grep -q . && return 0
		sleep 0.1
	done
	log "nothing listens on $3 ($2) in $1"
	exit 1
}

# ---- services ------------------------------------------------------------------
# The beacon's server: reads the 300-byte check-in, answers 400 bytes, closes.
serve ext -l -k 203.0.113.7 443 -c 'head -c 300 >/dev/null; printf "%0400d" 0'
for k in $(seq 20 25); do
	serve ext -l -k "203.0.113.$k" 80 -c 'head -c 18 >/dev/null; printf "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"'
done
for k in 20 21 22; do
	serve ext -u -l -k "203.0.113.$k" 53 -c 'head -n 1 >/dev/null; printf "answer\n"'
done
# The lateral chain's SSH-like and SMB-like servers.
serve b -l -k 10.0.2.10 22 -c 'printf "SSH-2.0-OpenSSH_9.2\r\n"; head -c 4000 >/dev/null; printf "%09000d" 0'
serve c -l -k 10.0.3.10 445 -c 'head -c 2000 >/dev/null; printf "%03000d" 0'
listening ext t 203.0.113.7:443
for k in $(seq 20 25); do listening ext t "203.0.113.$k:80"; done
for k in 20 21 22; do listening ext u "203.0.113.$k:53"; done
listening b t 10.0.2.10:22
listening c t 10.0.3.10:445
# The scanned ports must be closed, so that the sentries answer RST.
for s in "${sentries[@]}"; do
	if nsx "$s" ss -tlnH 'sport >= :1001 and sport <= :1010' | grep -q .; then
		log "sentry-$s listens on a port in 1001-1010"
		exit 1
	fi
done

# ---- captures ------------------------------------------------------------------
# -Z root: Debian's tcpdump otherwise drops to the tcpdump user, who may not
# write in the work directory.
declare -A capture
for s in "${sentries[@]}"; do
	ip netns exec "$tag$s" timeout 300 tcpdump -i eth0 -s 1600 -U -Z root -w "$work/sentry-$s.pcap" 2>"$work/tcpdump-$s.err" &
	capture[$s]=$!
	pids+=($!)
done
for s in "${sentries[@]}"; do
	for _ in $(seq 50); do grep -q "listening on" "$work/tcpdump-$s.err" && break; sleep 0.1; done
	grep -q "listening on" "$work/tcpdump-$s.err" || { log "tcpdump on sentry-$s did not start"; cat "$work/tcpdump-$s.err" >&2; exit 1; }
done
sleep 0.5

try() { # try WHAT WANT COMMAND...: run a client that must read WANT bytes of reply
	local what=$1 want=$2 got
	shift 2
	got=$("$@" 2>>"$work/ncat.err" | wc -c) || true
	if [[ $got != "$want" ]]; then
		log "$what: read $got bytes of reply, want $want"
		echo x >>"$work/failures"
	fi
}

# What the clients send (the servers read exactly this much, then answer).
printf '%0300d' 0 >"$work/beacon.req"
printf '%04000d' 0 >"$work/ssh.req"
printf '%02000d' 0 >"$work/smb.req"
printf 'GET / HTTP/1.0\r\n\r\n' >"$work/http.req"

# ---- 1. beacons ------------------------------------------------------------------
log "beacons"
beacon() { # beacon SENTRY: 6 check-ins, starting 2 s ±100 ms apart
	local s=$1 t0 at now
	t0=$(($(now_ms) + 300))
	for n in $(seq 0 5); do
		at=$((t0 + n * 2000 + RANDOM % 201 - 100))
		now=$(now_ms)
		((at <= now)) || msleep $((at - now))
		try "beacon $((n + 1)) from sentry-$s" 400 nsx "$s" timeout 5 ncat --no-shutdown 203.0.113.7 443 <"$work/beacon.req"
	done
}
beacon_pids=()
for s in "${sentries[@]}"; do
	beacon "$s" &
	beacon_pids+=($!)
	pids+=($!)
	sleep 0.3
done
for p in "${beacon_pids[@]}"; do wait "$p" || true; done
sleep 1

# ---- 2. the scan, spread over the sentries -------------------------------------
log "scan"
for ip in 10.0.1.10 10.0.2.10 10.0.3.10; do
	if ! nsx scan timeout 60 nmap -sS -Pn -n --max-retries 0 -p 1001-1010 "$ip" >"$work/nmap.out" 2>&1 ||
		[[ $(grep -c '^10[01][0-9]/tcp  *closed' "$work/nmap.out") != 10 ]]; then
		log "the scan of $ip did not find 10 closed ports"
		cat "$work/nmap.out" >&2
		echo x >>"$work/failures"
	fi
	sleep 0.5
done
sleep 1

# ---- 3. lateral movement: a -> b:22, then b -> c:445 ----------------------------
log "lateral movement"
try "sentry-a to 10.0.2.10:22" 9021 nsx a timeout 10 ncat --no-shutdown 10.0.2.10 22 <"$work/ssh.req"
sleep 3
try "sentry-b to 10.0.3.10:445" 3000 nsx b timeout 10 ncat --no-shutdown 10.0.3.10 445 <"$work/smb.req"
sleep 1

# ---- 4. background ---------------------------------------------------------------
# HTTP destinations per sentry (port 80) and its UDP destination (port 53):
# each (proto, address, port) is shared by at most two sentries.
log "background"
declare -A http=([a]="20 21 22" [b]="23 24 25" [c]="21 23 25") udp=([a]=20 [b]=21 [c]=22)
for s in "${sentries[@]}"; do
	for k in ${http[$s]}; do
		try "sentry-$s to 203.0.113.$k:80" 43 nsx "$s" timeout 5 ncat --no-shutdown "203.0.113.$k" 80 <"$work/http.req"
		sleep 0.2
	done
	# The query's stdin stays open 1 s: an ncat -u client quits at its EOF.
	# shellcheck disable=SC2016 # $1 and $2 are bash -c's arguments
	try "sentry-$s to 203.0.113.${udp[$s]}:53/udp" 7 nsx "$s" timeout 5 bash -c '(echo "query-$2"; sleep 1) | ncat -u "$1" 53' _ "203.0.113.${udp[$s]}" "$s"
done
sleep 1

# ---- stop the captures, keep the pcaps -----------------------------------------
for s in "${sentries[@]}"; do kill -INT "${capture[$s]}" 2>/dev/null || true; done
for s in "${sentries[@]}"; do
	wait "${capture[$s]}" 2>/dev/null || true
	grep -q "packets captured" "$work/tcpdump-$s.err" || { log "tcpdump on sentry-$s did not stop cleanly"; echo x >>"$work/failures"; }
done
if [[ -s $work/failures ]]; then
	log "$(wc -l <"$work/failures") client(s) failed; not writing the pcaps"
	cat "$work/ncat.err" >&2
	exit 1
fi
mkdir -p "$out"
for s in "${sentries[@]}"; do
	cp "$work/sentry-$s.pcap" "$out/sentry-$s.pcap"
	log "sentry-$s: $(tail -n 2 "$work/tcpdump-$s.err" | tr '\n' ' ')"
done
log "wrote $(cd "$out" && pwd)/sentry-{a,b,c}.pcap"
