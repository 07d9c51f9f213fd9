#!/bin/sh
# `redis-server [config-file] [--option value]...` with protected mode off, as the registry
# image's server defaults to; a config file, if any, must stay the first argument.
set -eu
if [ "${1:-}" = redis-server ]; then
    shift
    case "${1:-}" in
        -v | --version | -h | --help) exec redis-server "$@" ;;
        -* | "") exec redis-server --protected-mode no "$@" ;;
        *) config="$1"; shift; exec redis-server "$config" --protected-mode no "$@" ;;
    esac
fi
exec "$@"
