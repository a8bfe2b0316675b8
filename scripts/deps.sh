#!/usr/bin/env bash
# Installs what building, testing and demonstrating Godwit needs on a fresh
# Debian machine: the C toolchain for the test guests, iproute2 for the
# network tests, QEMU (the reference the CPU conformance test compares
# with), the Go modules, and staticcheck. With --bench, also what the
# benchmarks need: QEMU from Debian's packages, their baseline, which they
# drive from Go. Idempotent and quiet when everything is there.
set -euo pipefail
export PATH=/usr/local/go/bin:$HOME/go/bin:$PATH

STATICCHECK_VERSION=v0.8.2
APT_PACKAGES=(gcc make binutils iproute2 git qemu-system-x86 xz-utils)
if [ "${1:-}" = "--bench" ]; then
	[[ " ${APT_PACKAGES[*]} " == *" qemu-system-x86 "* ]] || APT_PACKAGES+=(qemu-system-x86)
fi

if ! command -v go >/dev/null; then
	echo "deps: Go is not installed: install Go 1.26 at /usr/local/go (https://go.dev/doc/install)" >&2
	exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing Debian packages ${missing[*]}: run as root or apt-get install them" >&2
		exit 1
	fi
	echo "deps: installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

go mod download
if ! command -v staticcheck >/dev/null || ! staticcheck -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
	echo "deps: installing staticcheck $STATICCHECK_VERSION"
	go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
