#!/usr/bin/env bash
# Runs the whole test suite: unit, integration, eBPF (real kernel) and end-to-end tests
# against real servers and clients. Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root "the test suite"
# clang-19/llvm-19/libbpf-dev: the freshness check rebuilds the committed eBPF object.
# The rest are the real servers and clients of the end-to-end tests (their services are
# not started: each test runs its own instance on a loopback port).
apt_install clang-19 llvm-19 libbpf-dev ca-certificates procps python3 openssl \
    nginx curl apache2-utils \
    redis-server redis-tools memcached \
    postgresql postgresql-contrib mariadb-server mariadb-client \
    dnsmasq-base dnsutils mosquitto mosquitto-clients nftables \
    prometheus prometheus-node-exporter
# grpcio (PyPI): the gRPC server and client of the HTTP/2 end-to-end test.
python3 -c 'import grpc' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check grpcio
# influxdb-client (PyPI): the line protocol writer of the metrics ingest end-to-end test.
python3 -c 'import influxdb_client' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check influxdb-client
# adbc-driver-flightsql and pyarrow (PyPI): the Flight SQL client of the Flight SQL test.
python3 -c 'import adbc_driver_flightsql.dbapi, pyarrow' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check adbc-driver-flightsql pyarrow
# opentelemetry-sdk and its OTLP exporters (PyPI): the instrumented service of the tracing test.
python3 -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, opentelemetry.exporter.otlp.proto.grpc' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check opentelemetry-sdk \
        opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-grpc
# psycopg2-binary (PyPI): the traced service's PostgreSQL client in the three-host trace test.
python3 -c 'import psycopg2' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check psycopg2-binary
# Test binaries run one after another (each may load eBPF programs); tests inside one
# binary run in parallel.
cargo test --workspace --no-fail-fast "$@"
