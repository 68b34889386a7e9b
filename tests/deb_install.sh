#!/usr/bin/env bash
# The Debian package (issue 17): built with cargo-deb, holding what the README says, installed
# with dpkg into a throwaway root, and capturing there: the installed CLI (which finds its
# libraries in ../lib/netintercept) and a bare LD_PRELOAD of the installed library (which finds
# the CLI as its collector in ../../bin). scripts/fresh-debian installs it on a fresh system.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "deb_install: $*" >&2; exit 1; }
command -v cargo-deb >/dev/null || fail "cargo-deb is missing: cargo install cargo-deb"

(cd "$root" && cargo deb >"$work/cargo-deb.log" 2>&1) || { tail -20 "$work/cargo-deb.log" >&2; fail "cargo deb"; }
deb=$(tail -1 "$work/cargo-deb.log")
[ -f "$deb" ] || fail "cargo deb made no package: $deb"

dpkg-deb --contents "$deb" | awk '{print $NF}' > "$work/contents"
for f in usr/bin/netintercept usr/lib/netintercept/libnetintercept.so \
         usr/lib/netintercept/libnetintercept_pcapfilter.so usr/share/man/man1/netintercept.1.gz \
         usr/share/doc/netintercept/README.md usr/share/bash-completion/completions/netintercept \
         usr/share/zsh/vendor-completions/_netintercept \
         usr/share/fish/vendor_completions.d/netintercept.fish; do
  grep -qx "./$f" "$work/contents" || fail "the package lacks /$f"
done
dpkg-deb -f "$deb" Depends | grep -q libpcap0.8 || fail "Depends lacks libpcap0.8: $(dpkg-deb -f "$deb" Depends)"

# A root of its own: dpkg's database there is empty, so the dependencies (installed on this
# machine) are not known to it.
mkdir -p "$work/root/var/lib/dpkg/info" "$work/root/var/lib/dpkg/updates"
touch "$work/root/var/lib/dpkg/status"
dpkg --root="$work/root" --force-depends -i "$deb" >/dev/null 2>&1 || fail "dpkg -i"
usr="$work/root/usr"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir "$work/site" && echo deb-page > "$work/site/index.html"
(cd "$work/site" && exec python3 -m http.server --bind 127.0.0.1 "$port" >/dev/null 2>&1) &
server=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

url="http://127.0.0.1:$port/index.html"
env -u NETINTERCEPT_LIB "$usr/bin/netintercept" -f "tcp port $port" -w "$work/cli.pcap" -- \
  curl -s -o /dev/null "$url" 2>"$work/cli.err" || fail "the installed CLI: $(cat "$work/cli.err")"
grep -qE "^netintercept: capture written to '$work/cli.pcap': [0-9]+ packets, 1 TCP connection$" \
  "$work/cli.err" || fail "the end-of-run block: $(cat "$work/cli.err")"
env -u NETINTERCEPT_COLLECTOR LD_PRELOAD="$usr/lib/netintercept/libnetintercept.so" \
  NETINTERCEPT_FILE="$work/bare.pcap" curl -s -o /dev/null "$url"
for cap in cli bare; do
  n=$(tshark -r "$work/$cap.pcap" -d "tcp.port==$port,http" -Y 'http.request.method == "GET"' 2>/dev/null | wc -l)
  [ "$n" = 1 ] || fail "$cap.pcap: expected one GET, found $n"
done
zcat "$usr/share/man/man1/netintercept.1.gz" | grep -q 'usr/lib/netintercept/libnetintercept.so' ||
  fail "the man page does not name /usr/lib/netintercept"
bash -c "source '$usr/share/bash-completion/completions/netintercept' && complete -p netintercept" \
  >/dev/null || fail "the bash completion does not load"
echo "deb_install: 4 passed, 0 failed"
