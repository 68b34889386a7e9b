#!/usr/bin/env bash
# The CMake path of users of the original C tool: configure, build, install, and capture with the
# result, through LD_PRELOAD of netintercept.so and through the installed CLI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "cmake_build: $*" >&2; exit 1; }

cmake -S "$root/CMakeLists-compat" -B "$work/build" >/dev/null
cmake --build "$work/build" >/dev/null
cmake --install "$work/build" --prefix "$work/prefix" >/dev/null
for f in build/netintercept.so build/libnetintercept.so build/netintercept \
         build/libnetintercept_pcapfilter.so prefix/lib/libnetintercept_pcapfilter.so \
         prefix/lib/netintercept.so prefix/lib/libnetintercept.so prefix/bin/netintercept \
         prefix/share/man/man1/netintercept.1 prefix/share/bash-completion/completions/netintercept \
         prefix/share/zsh/site-functions/_netintercept \
         prefix/share/fish/vendor_completions.d/netintercept.fish; do
  [ -e "$work/$f" ] || fail "missing $f"
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir "$work/site" && echo cmake-page > "$work/site/index.html"
(cd "$work/site" && exec python3 -m http.server --bind 127.0.0.1 "$port" >/dev/null 2>&1) &
server=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

LD_PRELOAD="$work/build/netintercept.so" NETINTERCEPT_FILE="$work/a.pcap" \
  curl -s -o /dev/null "http://127.0.0.1:$port/index.html"
# The installed CLI with a filter: the filter library is found in PREFIX/lib.
"$work/prefix/bin/netintercept" -f "tcp port $port" -w "$work/b.pcap" -- curl -s -o /dev/null "http://127.0.0.1:$port/index.html" 2>/dev/null
for cap in a b; do
  n=$(tshark -r "$work/$cap.pcap" -d "tcp.port==$port,http" -Y 'http.request.method == "GET"' 2>/dev/null | wc -l)
  [ "$n" = 1 ] || fail "$cap.pcap: expected one GET, found $n"
done
echo "cmake_build: 2 passed, 0 failed"
