# Stand-in for the registry image nginx:1.28-alpine (deploy/docker-compose.yml's `lb`),
# made by scripts/test-deploy where no image registry is reachable: Debian's nginx (1.22)
# on the local debian:bookworm-slim, run as the registry image runs it (in the
# foreground, configuration in /etc/nginx/nginx.conf, logs on stdout/stderr).
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx \
    && rm -rf /var/lib/apt/lists/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
