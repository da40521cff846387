#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian, as root), then
# gofmt, go vet, staticcheck, and every unit, fuzz-seed and end-to-end test
# with TCPSENTRY_E2E=1, under which a missing prerequisite fails a test
# instead of skipping it.
set -euo pipefail
cd "$(dirname "$0")/.."

staticcheck_version=v0.8.2
debian_packages=(iproute2 nmap hping3 ncat tcpdump tshark conntrack nftables net-tools lsof procps time ethtool nats-server)

log() { printf '== %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
	echo "scripts/test.sh: the end-to-end tests create network namespaces and need root; run it with sudo" >&2
	exit 2
fi

missing=()
for p in "${debian_packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

gobin=$(go env GOPATH)/bin
if ! "$gobin/staticcheck" -version 2>/dev/null | grep -q "${staticcheck_version#v}"; then
	log "installing staticcheck $staticcheck_version"
	go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"
fi

log "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi

log "go vet"
go vet ./...

log "staticcheck"
"$gobin/staticcheck" ./...

log "CGO_ENABLED=0 build"
CGO_ENABLED=0 go build -o /dev/null ./cmd/tcpsentry

log "go test (unit, fuzz seeds, end-to-end) with TCPSENTRY_E2E=1"
TCPSENTRY_E2E=1 go test -count=1 -timeout 20m ./...
