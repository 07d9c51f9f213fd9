# Stand-in for the registry image redis:7.2 (deploy/docker-compose.yml's `redis`), made by
# scripts/test-deploy where no image registry is reachable: Debian's redis-server (7.0,
# the oldest Redis Streamgate supports) on the local debian:bookworm-slim, set up as the
# registry image is: data in /data (a volume), run as the user `redis`, protected mode
# off (the container's network is the boundary; the registry image patches the default).
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir /data \
    && chown redis:redis /data
COPY --chmod=0755 redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /data
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
