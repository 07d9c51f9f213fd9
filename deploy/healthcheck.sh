#!/bin/bash
# The images' HEALTHCHECK: GET /healthz on the port of LISTEN_ADDR, through bash's
# /dev/tcp, so the runtime image needs neither curl nor wget. Exits 0 on HTTP 200.
#
# It connects to 127.0.0.1, which reaches a service listening on 0.0.0.0 (the images'
# default) or on 127.0.0.1; a LISTEN_ADDR naming another single address is not probed.
set -euo pipefail

listen_addr="${LISTEN_ADDR:-0.0.0.0:8080}"
port="${listen_addr##*:}"

# Bounded by the HEALTHCHECK --timeout too; `read -t` keeps a hung server from holding
# the probe open until then.
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 2 status_line <&3
[[ "$status_line" =~ ^HTTP/1\.[01]\ 200 ]]
