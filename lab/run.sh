#!/usr/bin/env bash
# The attack lab: network namespaces joined by a bridge, a victim running
# services, benign clients, and real attack tools (nmap scans, a slow scan,
# hping3 floods), an implant beaconing to the victim and a 40 MB upload. It records the victim's traffic with tcpdump and writes
# the ground truth (event,start,end,src,dst,label) for `tcpsentry eval`.
#
# All traffic stays inside the namespaces this script creates; every loop
# is bounded in count and time; everything is removed on exit.
#
#   sudo lab/run.sh [OUTDIR]       default OUTDIR: lab/out
#
# Writes OUTDIR/lab.pcap and OUTDIR/truth.csv. Needs root, iproute2, nmap,
# hping3, ncat, tcpdump and ethtool (scripts/test.sh installs them).
set -euo pipefail

out=${1:-"$(dirname "$0")/out"}
mkdir -p "$out"
out=$(cd "$out" && pwd)
tag=tsl$$
net=10.254.$(($$ % 200 + 20))
victim_ip=$net.2
attacker_ip=$net.66
clients=("$net.11" "$net.12" "$net.13")
implant_ip=$net.21 # beacons to the victim's port 8080
stager_ip=$net.22  # uploads tens of MB to the victim's port 9000

[[ $(id -u) == 0 ]] || { echo "lab/run.sh: needs root (network namespaces)" >&2; exit 2; }
for t in ip nmap hping3 ncat tcpdump ethtool timeout; do
	command -v "$t" >/dev/null || { echo "lab/run.sh: $t is not installed" >&2; exit 2; }
done

pids=()
namespaces=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	for n in "${namespaces[@]}"; do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
truth=$out/truth.csv
echo "event,start,end,src,dst,label" >"$truth"
event() { echo "$1,$2,$3,$4,$5,$6" >>"$truth"; }

# ---- the network: a bridge in its own namespace, one veth per host -----------
sw=${tag}sw
ip netns add "$sw"; namespaces+=("$sw")
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
i=0
host() { # host NAME IP
	local ns=$tag$1 dev=${tag}h$i
	ip netns add "$ns"; namespaces+=("$ns")
	ip -n "$ns" link set lo up
	ip link add "$dev" netns "$sw" type veth peer name eth0 netns "$ns"
	ip -n "$sw" link set "$dev" master br0 up
	ip -n "$ns" addr add "$2/24" dev eth0
	ip -n "$ns" link set eth0 up
	# Wire-like packets: no segmentation offloads on either end.
	ip netns exec "$ns" ethtool -K eth0 tso off gso off gro off >/dev/null 2>&1 || true
	ip netns exec "$sw" ethtool -K "$dev" tso off gso off gro off >/dev/null 2>&1 || true
	i=$((i + 1))
}
host v "$victim_ip"
host a "$attacker_ip"
for k in "${!clients[@]}"; do host "c$k" "${clients[$k]}"; done
host b "$implant_ip"
host x "$stager_ip"
# SYN-ACKs to spoofed flood sources go to the attacker, who drops them.
ip -n "${tag}v" route add default via "$attacker_ip"

# ---- victim services -----------------------------------------------------------
inv() { ip netns exec "${tag}v" "$@"; }
inv timeout 600 ncat -l -k "$victim_ip" 22 -c 'printf "SSH-2.0-OpenSSH_9.2\r\n"; sleep 1' >/dev/null 2>&1 &
pids+=($!)
inv timeout 600 ncat -l -k "$victim_ip" 80 -c 'head -c 200 >/dev/null; printf "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"' >/dev/null 2>&1 &
pids+=($!)
inv timeout 600 ncat -u -l -k "$victim_ip" 53 -c 'head -c 64 >/dev/null; printf answer' >/dev/null 2>&1 &
pids+=($!)
# The implant's "C2 server" and the stager's drop point.
inv timeout 600 ncat -l -k "$victim_ip" 8080 -c 'head -c 100 >/dev/null; printf "HTTP/1.0 204 No Content\r\n\r\n"' >/dev/null 2>&1 &
pids+=($!)
inv timeout 600 ncat -l -k "$victim_ip" 9000 >/dev/null 2>&1 &
pids+=($!)
for port in 22 80 8080 9000; do
	for _ in $(seq 50); do inv ss -tlnH "sport = :$port" | grep -q . && break; sleep 0.1; done
done

inv timeout 600 tcpdump -i eth0 -w "$out/lab.pcap" -U -s 256 >/dev/null 2>&1 &
tcpdump_pid=$!
pids+=("$tcpdump_pid")
sleep 1

# ---- benign clients: web, ssh-like and DNS-like traffic, in the background -----
benign() { # benign INDEX: bounded client loop
	local ns=$tag"c$1"
	for n in $(seq 12); do
		printf 'GET / HTTP/1.0\r\nHost: victim\r\n\r\n' | ip netns exec "$ns" timeout 5 ncat "$victim_ip" 80 >/dev/null 2>&1 || true
		echo "hello" | ip netns exec "$ns" timeout 3 ncat "$victim_ip" 22 >/dev/null 2>&1 || true
		echo "query$n" | ip netns exec "$ns" timeout 2 ncat -u -w 1 "$victim_ip" 53 >/dev/null 2>&1 || true
		sleep 0.$((RANDOM % 5 + 3))
	done
}
bstart=$(now)
benign_pids=()
for k in "${!clients[@]}"; do benign "$k" & benign_pids+=($!); pids+=($!); done

# ---- the implant: a real client calling home every 1 s ±25% for ~30 s -------
# (concurrently with the attacks below; its truth row says who and when).
beacon() {
	local start end ms
	start=$(now)
	for _ in $(seq 30); do
		printf 'POST /c2 HTTP/1.0\r\nContent-Length: 16\r\n\r\ncheckin-00000001' |
			ip netns exec "${tag}b" timeout 2 ncat "$victim_ip" 8080 >/dev/null 2>&1 || true
		ms=$((750 + RANDOM % 500)) # 0.750-1.249 s
		sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
	done
	end=$(now)
	event beacon "$start" "$end" "$implant_ip" "$victim_ip" beacon
}
beacon & beacon_pid=$!
pids+=("$beacon_pid")

# ---- attacks, one after another ------------------------------------------------
ina() { ip netns exec "${tag}a" "$@"; }
attack() { # attack NAME LABEL SRC COMMAND... (SRC empty: spoofed, any source)
	local name=$1 label=$2 src=$3 start end
	shift 3
	start=$(now)
	"$@" >/dev/null 2>&1 || true
	end=$(now)
	event "$name" "$start" "$end" "$src" "$victim_ip" "$label"
	sleep 1
}
sleep 1
for s in sS sT sF sN sX sA sM; do
	attack "nmap-$s" portscan "$attacker_ip" ina timeout 60 nmap -"$s" -T4 -n -Pn -p1-200 "$victim_ip"
done
attack nmap-sU portscan "$attacker_ip" ina timeout 60 nmap -sU -T4 -n -Pn --max-retries 0 -p1-50 "$victim_ip"
attack nmap-slow portscan "$attacker_ip" ina timeout 60 nmap -sS -n -Pn --scan-delay 150ms --max-retries 0 -p1-40 "$victim_ip"
attack hping3-flood-spoofed synflood "" ina timeout 30 hping3 -q -S --rand-source -p 80 -c 20000 -i u50 "$victim_ip"
attack hping3-flood synflood "$attacker_ip" ina timeout 30 hping3 -q -S -p 80 -c 5000 -i u100 "$victim_ip"
# Staged data leaves: 40 MB pushed to the drop point in one connection.
attack upload exfil "$stager_ip" ip netns exec "${tag}x" timeout 60 bash -c "head -c 40000000 /dev/zero | ncat --send-only $victim_ip 9000"

# Wait for the benign clients and the implant (bounded by their own
# loops), then label the clients.
for p in "${benign_pids[@]}" "$beacon_pid"; do wait "$p" 2>/dev/null || true; done
bend=$(now)
for ip in "${clients[@]}"; do event "benign-$ip" "$bstart" "$bend" "$ip" "$victim_ip" benign; done
sleep 1
kill "$tcpdump_pid" 2>/dev/null || true
wait "$tcpdump_pid" 2>/dev/null || true
echo "lab: wrote $out/lab.pcap and $truth ($(($(wc -l <"$truth") - 1)) events)"
