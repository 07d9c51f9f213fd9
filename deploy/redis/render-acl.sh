#!/bin/sh
# Renders Streamgate's Redis ACL file: deploy/redis/users.acl.in without its comment
# lines, with each user's `<password>` replaced by `#<SHA-256 of the password>` read from
# PASSWORD_DIR/redis-USER-password (one trailing line break ignored). Prints to stdout.
#
#   render-acl.sh TEMPLATE PASSWORD_DIR > users.acl
#
# POSIX sh and coreutils only: it runs in the redis image (Kubernetes init container) as
# well as on the host (deploy/make-secrets.sh).
set -eu

template="$1"
password_dir="$2"

while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
        '#'* | '') continue ;;
    esac
    case "$line" in
        *'<password>'*)
            user="$(printf '%s\n' "$line" | cut -d' ' -f2)"
            file="$password_dir/redis-$user-password"
            if [ ! -r "$file" ]; then
                echo "render-acl.sh: no password file $file for Redis user $user" >&2
                exit 1
            fi
            # $(...) drops the trailing line break, as the services do.
            hash="$(printf '%s' "$(cat "$file")" | sha256sum | cut -d' ' -f1)"
            before="${line%%<password>*}"
            after="${line#*<password>}"
            line="${before}#${hash}${after}"
            ;;
    esac
    printf '%s\n' "$line"
done < "$template"
