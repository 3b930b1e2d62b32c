#!/usr/bin/env bash
# System packages the test suite needs: tshark (differential tests against Wireshark's
# dissectors), tcpreplay (sensor replay tests), libpcap and its headers (live capture binding),
# iproute2 (veth pairs in a network namespace), graphviz (`dot` lays out the report's zone
# diagram) and chromium (headless render test of the HTML report).
# Installs only what is missing; needs root (apt-get), as on CI and the dev machines.
set -euo pipefail
need=()
command -v tshark >/dev/null || need+=(tshark)
command -v tcpreplay >/dev/null || need+=(tcpreplay)
command -v ip >/dev/null || need+=(iproute2)
[ -e /usr/include/pcap/pcap.h ] || need+=(libpcap0.8-dev)
command -v dot >/dev/null || need+=(graphviz)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: need root to apt-get install ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
