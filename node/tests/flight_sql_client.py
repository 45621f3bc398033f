"""Flight SQL client side of node/tests/e2e_flight_sql.rs, with PyPI's ADBC driver.

Usage: flight_sql_client.py PORT OUT_DIR TOKEN STATEMENT PREPARED PARAM...

Connects with the token as a bearer header, lists the catalog, runs STATEMENT and the
prepared PREPARED with the parameters (ints where they parse), writes both results as
Arrow IPC streams into OUT_DIR, and prints one JSON object of what it saw, including the
errors of a bad query, of no token and of a wrong password.
"""

import json
import sys
import warnings

import adbc_driver_flightsql as flightsql
import adbc_driver_flightsql.dbapi as dbapi
import pyarrow as pa

warnings.simplefilter("ignore")
port, out_dir, token, statement, prepared, *params = sys.argv[1:]
uri = f"grpc://127.0.0.1:{port}"
bearer = {flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}


def write(name, table):
    with pa.OSFile(f"{out_dir}/{name}.arrow", "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)


def error_of(f):
    try:
        f()
    except Exception as e:  # the driver's error classes vary by version
        return str(e)
    return None


seen = {}
with dbapi.connect(uri, db_kwargs=bearer) as conn:
    seen["info"] = {k: str(v) for k, v in conn.adbc_get_info().items()}
    tables = []
    for catalog in conn.adbc_get_objects().read_all().to_pylist():
        for schema in catalog["catalog_db_schemas"]:
            for table in schema["db_schema_tables"]:
                tables.append(f'{schema["db_schema_name"]}.{table["table_name"]}')
    seen["tables"] = sorted(tables)
    schema = conn.adbc_get_table_schema("metrics", db_schema_filter="ext_metrics")
    seen["metrics_columns"] = [[f.name, str(f.type)] for f in schema]
    with conn.cursor() as cur:
        cur.execute(statement)
        write("statement", cur.fetch_arrow_table())
        values = [int(p) if p.lstrip("-").isdigit() else p for p in params]
        cur.execute(prepared, parameters=values)
        write("prepared", cur.fetch_arrow_table())
        seen["bad_query_error"] = error_of(lambda: cur.execute("SELECT nope FROM ext_metrics.metrics"))


def query_without(kwargs):
    with dbapi.connect(uri, db_kwargs=kwargs) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetch_arrow_table()


seen["no_token_error"] = error_of(lambda: query_without({}))
seen["wrong_password_error"] = error_of(lambda: query_without({"username": "u", "password": "wrong"}))
seen["right_password_error"] = error_of(lambda: query_without({"username": "u", "password": token}))
print(json.dumps(seen))
