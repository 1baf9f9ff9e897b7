# Stand-in for the official postgres image, which CI cannot pull: the debootstrap'd
# Debian root (BASE_IMAGE) with Debian's PostgreSQL server and an entrypoint that keeps
# the parts of the official image's contract docker-compose.yml relies on
# (POSTGRES_USER/_PASSWORD/_DB, PGDATA=/var/lib/postgresql/data, pg_isready, password
# logins over the network). Built by .ci/container.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG PG_MAJOR=15
# The package must not create and start its own cluster: the entrypoint makes one.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main-cluster.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
    && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
# Fast shutdown, as the official image does.
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
