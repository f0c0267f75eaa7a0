#!/usr/bin/env bash
# Installs the Debian packages weft needs to build, test and run its demo.
# Idempotent: does nothing (and needs no network) when everything is present.
set -euo pipefail

PACKAGES=(
  # build
  cmake ninja-build pkg-config clang llvm g++ make
  libbpf-dev bpftool libelf-dev zlib1g-dev liburing-dev
  android-libboringssl-dev android-boringssl libnghttp2-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libcli11-dev catch2 libyaml-cpp-dev nlohmann-json3-dev libssl-dev
  # run and test: namespaces, real clients and servers, captures
  iproute2 procps python3 curl openssl tcpdump nghttp2-client iputils-ping
  # bench suite (bench/run.py): server, load generators, plots
  nginx-light wrk python3-matplotlib stunnel4 haproxy iperf3 linux-perf
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root (or with sudo) to install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
