#!/bin/sh
# Creates the secrets deploy/docker-compose.yml mounts, once: a random password per Redis
# user, the publish token, and the Redis ACL file rendered from deploy/redis/users.acl.in
# with those passwords. Existing secrets are kept (delete a file to renew it, then run
# this again and restart the stack).
#
#   deploy/make-secrets.sh            # into deploy/secrets/
#   deploy/make-secrets.sh DIR        # elsewhere
#
# The directory is private (0700); the files in it are 0644 because Compose bind-mounts
# them into containers whose users (10001, redis) are not the file's owner.
set -eu

deploy_dir="$(cd "$(dirname "$0")" && pwd)"
secrets_dir="${1:-$deploy_dir/secrets}"

mkdir -p "$secrets_dir"
chmod 0700 "$secrets_dir"

for name in redis-admin-password redis-gateway-password redis-producer-password \
            redis-janitor-password redis-ingest-password publish-token; do
    file="$secrets_dir/$name"
    if [ ! -s "$file" ]; then
        # 32 random bytes as 64 hex digits: no character any URL or header needs escaped.
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$file"
        echo >> "$file"
        echo "created $file"
    fi
    chmod 0644 "$file"
done

sh "$deploy_dir/redis/render-acl.sh" "$deploy_dir/redis/users.acl.in" "$secrets_dir" > "$secrets_dir/redis-users.acl"
chmod 0644 "$secrets_dir/redis-users.acl"
echo "rendered $secrets_dir/redis-users.acl"
