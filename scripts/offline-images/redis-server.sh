#!/bin/sh
# Debian's redis-server with protected mode off unless the command line turns it on, as the
# registry image's server is compiled (the container's network is the boundary). On PATH
# before /usr/bin, so it applies however the server is started (`redis-server ...`, or
# `sh -c "exec redis-server ..."` as the cluster compose file does). A configuration file,
# if any, stays the first argument.
set -eu
case "${1:-}" in
    -v | --version | -h | --help) exec /usr/bin/redis-server "$@" ;;
    -* | "") exec /usr/bin/redis-server --protected-mode no "$@" ;;
    *) config="$1"; shift; exec /usr/bin/redis-server "$config" --protected-mode no "$@" ;;
esac
