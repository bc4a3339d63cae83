#!/bin/bash
# Runs once, after InfluxDB's first-start setup (docker-entrypoint-initdb.d):
# maps the InfluxQL database "wattledger" (retention policy "autogen") to the
# bucket, so the dashboards' InfluxQL queries (and v1 /write clients) find
# it. The entrypoint provides the bucket id and a configured `influx` CLI.
set -euo pipefail
influx v1 dbrp create \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --db "${DOCKER_INFLUXDB_INIT_BUCKET}" \
  --rp autogen \
  --default \
  --org "${DOCKER_INFLUXDB_INIT_ORG}"
