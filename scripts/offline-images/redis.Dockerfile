# Stand-in for the registry image redis:7.2 (the compose files' Redis nodes), made by
# scripts/test-deploy where no image registry is reachable: Debian's redis-server (7.0,
# the oldest Redis Streamgate supports) on the local debian:bookworm-slim, set up as the
# registry image is: data in /data (a volume), run as the user `redis`, protected mode
# off by default (the registry image compiles it so; here a wrapper first on PATH).
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir /data \
    && chown redis:redis /data
COPY --chmod=0755 redis-server.sh /usr/local/bin/redis-server
VOLUME /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server"]
