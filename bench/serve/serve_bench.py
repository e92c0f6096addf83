"""Serving benchmark: the same TPC-H `orders` table served by Strata (Postgres protocol,
Flight SQL, REST) and by PostgreSQL, measured in one run. Prints numbers and ratios; never
fails on one. Run through bench/serve/run.sh."""

import argparse
import base64
import concurrent.futures as cf
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_postgresql.dbapi as adbc_pg
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

PASSWORD = "bench-password"
GROUP_BY = (
    "SELECT o_orderstatus, o_orderpriority, count(*) AS n, sum(o_totalprice) AS revenue, "
    "avg(o_totalprice) AS avg_price FROM {t} GROUP BY 1, 2 ORDER BY 1, 2"
)


def log(msg):
    print(f"== {msg}", file=sys.stderr, flush=True)


def strata(bin_, project, *args, env=None, check=True):
    e = dict(os.environ, STRATA_LOG="error", PW=PASSWORD, **(env or {}))
    r = subprocess.run([bin_, *args], cwd=project, env=e, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"strata {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def setup_strata(bin_, work, orders):
    project = os.path.join(work, "project")
    marker = os.path.join(work, "loaded")
    if os.path.exists(marker) and open(marker).read() == orders:
        log(f"Reusing the Strata project in {project}")
        return project
    log(f"Loading {orders} into a fresh Strata project")
    subprocess.run(["rm", "-rf", project], check=True)
    subprocess.run([bin_, "init", project, "--name", "serve_bench"], check=True,
                   capture_output=True)
    t0 = time.perf_counter()
    strata(bin_, project, "sql", f"CREATE TABLE bench.orders AS SELECT * FROM '{orders}'")
    log(f"  loaded in {time.perf_counter() - t0:.1f} s")
    # The lake's counterpart of PostgreSQL's primary-key index: rows ordered by the key, so
    # file statistics and page indexes narrow a lookup to a few pages.
    t0 = time.perf_counter()
    strata(bin_, project, "optimize", "bench.orders", "--zorder-by", "o_orderkey")
    log(f"  ordered by o_orderkey in {time.perf_counter() - t0:.1f} s")
    strata(bin_, project, "users", "add", "admin", "--password-env", "PW", "--superuser")
    strata(bin_, project, "users", "add", "analyst", "--password-env", "PW",
           "--attr", "status=F")
    for args in (
        ["roles", "add", "analysts"],
        ["roles", "grant", "analysts", "analyst"],
        ["grants", "add", "select", "bench", "analysts"],
        ["policies", "add-filter", "bench.orders", "own_status", "--using",
         "o_orderstatus = current_user_attribute('status')", "--to", "analysts"],
        ["policies", "add-mask", "bench.orders.o_clerk", "--mask", "partial(0,3)"],
        ["policies", "add-mask", "bench.orders.o_comment", "--mask", "hash"],
    ):
        strata(bin_, project, *args)
    open(marker, "w").write(orders)
    return project


PG_TYPES = {
    pa.int64(): "bigint", pa.int32(): "integer", pa.string(): "text", pa.large_string(): "text",
    pa.string_view(): "text", pa.date32(): "date", pa.float64(): "double precision",
}


def setup_postgres(pg_url, orders):
    table = pq.read_table(orders)
    # View types (string_view) are not writable as CSV: plain strings for the copy.
    table = table.cast(pa.schema([
        pa.field(f.name, pa.string() if pa.types.is_string_view(f.type) else f.type)
        for f in table.schema
    ]))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        have = conn.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = 'bench_serve' AND table_name = 'orders'").fetchone()[0]
        if have:
            n = conn.execute("SELECT count(*) FROM bench_serve.orders").fetchone()[0]
            if n == table.num_rows:
                log("Reusing bench_serve.orders in PostgreSQL")
                return
        log(f"Loading {table.num_rows:,} rows into PostgreSQL (bench_serve.orders)")
        cols = []
        for f in table.schema:
            if pa.types.is_decimal(f.type):
                t = f"numeric({f.type.precision},{f.type.scale})"
            else:
                t = PG_TYPES.get(f.type, "text")
            cols.append(f'"{f.name}" {t}')
        conn.execute("DROP SCHEMA IF EXISTS bench_serve CASCADE")
        conn.execute("CREATE SCHEMA bench_serve")
        conn.execute(f"CREATE TABLE bench_serve.orders ({', '.join(cols)})")
        csv_path = "/tmp/strata-bench-serve-orders.csv"
        pacsv.write_csv(table, csv_path)
        with conn.cursor() as cur:
            with cur.copy("COPY bench_serve.orders FROM STDIN WITH (FORMAT csv, HEADER true)") as cp:
                with open(csv_path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        cp.write(chunk)
        os.remove(csv_path)
        conn.execute("ALTER TABLE bench_serve.orders ADD PRIMARY KEY (o_orderkey)")
        conn.execute("ANALYZE bench_serve.orders")


def start_server(bin_, project):
    p = subprocess.Popen(
        [bin_, "--json", "serve", "--pg-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
         "--flight-addr", "127.0.0.1:0", "--rate-limit", "0", "--max-rows", "100000000"],
        cwd=project, stdout=subprocess.PIPE, env=dict(os.environ, STRATA_LOG="error"), text=True)
    addrs = json.loads(p.stdout.readline())
    port = lambda k: int(addrs[k].rsplit(":", 1)[1])
    return p, port("postgres"), port("http"), port("flight")


def best_of(runs, fn):
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def lookups(clients, seconds, connect, query, keys):
    """Point lookups from `clients` threads, each with its own connection, for `seconds`."""
    lat, lock, errors = [], threading.Lock(), []
    # The clock starts once every client is connected (logins are not lookups).
    ready = threading.Barrier(clients)

    def worker(i):
        rnd = random.Random(i)
        mine = []
        conn, failed = None, False
        try:
            conn = connect()
        except Exception as e:  # noqa: BLE001 - reported, not raised
            errors.append(str(e))
            failed = True
        ready.wait()
        if failed:
            return
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            k = rnd.choice(keys)
            t0 = time.perf_counter()
            try:
                rows = query(conn, k)
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))
                break
            mine.append(time.perf_counter() - t0)
            assert rows == 1, f"key {k}: {rows} rows"
        with lock:
            lat.extend(mine)

    with cf.ThreadPoolExecutor(clients) as ex:
        list(ex.map(worker, range(clients)))
    if not lat:
        return {"error": errors[0] if errors else "no lookups"}
    lat.sort()
    return {
        "clients": clients, "lookups": len(lat), "qps": round(len(lat) / seconds, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 2),
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2),
        "errors": len(errors),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--orders", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--pg", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    project = setup_strata(a.bin, a.work, a.orders)
    setup_postgres(a.pg, a.orders)
    rows = pq.read_metadata(a.orders).num_rows
    keys = pq.read_table(a.orders, columns=["o_orderkey"]).column(0).to_pylist()
    server, pg_port, http_port, flight_port = start_server(a.bin, project)
    strata_pg = f"postgresql://admin:{PASSWORD}@127.0.0.1:{pg_port}/strata"
    flight_uri = f"grpc://127.0.0.1:{flight_port}"
    basic = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    R = {"rows": rows, "results": {}}
    res = R["results"]
    try:
        log("Full fetch through psycopg (text rows)")

        def psy_fetch(url, table):
            with psycopg.connect(url) as c:
                got = c.execute(f"SELECT * FROM {table}").fetchall()
            assert len(got) == rows, len(got)

        res["fetch_psycopg_postgres_s"], _ = best_of(a.runs, lambda: psy_fetch(a.pg, "bench_serve.orders"))
        res["fetch_psycopg_strata_s"], _ = best_of(a.runs, lambda: psy_fetch(strata_pg, "bench.orders"))

        log("Full fetch as Arrow (ADBC)")

        def adbc_fetch(conn_fn, table):
            with conn_fn() as c:
                cur = c.cursor()
                cur.execute(f"SELECT * FROM {table}")
                t = cur.fetch_arrow_table()
            assert t.num_rows == rows, t.num_rows

        res["fetch_adbc_postgres_s"], _ = best_of(
            a.runs, lambda: adbc_fetch(lambda: adbc_pg.connect(a.pg), "bench_serve.orders"))
        res["fetch_flight_strata_s"], _ = best_of(a.runs, lambda: adbc_fetch(
            lambda: flight_sql.connect(flight_uri, db_kwargs={"username": "admin", "password": PASSWORD}),
            "bench.orders"))

        log("Full fetch through REST (Arrow IPC)")

        def rest_fetch():
            req = urllib.request.Request(
                f"http://127.0.0.1:{http_port}/api/v1/sql", method="POST",
                data=json.dumps({"sql": "SELECT * FROM bench.orders"}).encode(),
                headers={"Authorization": basic, "Content-Type": "application/json",
                         "Accept": "application/vnd.apache.arrow.stream"})
            with urllib.request.urlopen(req, timeout=600) as r:
                t = ipc.open_stream(r).read_all()
            assert t.num_rows == rows, t.num_rows

        res["fetch_rest_arrow_strata_s"], _ = best_of(a.runs, rest_fetch)

        log("Group-by over all rows (psycopg)")

        def group_by(url, table, n):
            with psycopg.connect(url) as c:
                c.execute(GROUP_BY.format(t=table)).fetchall()  # warm
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    c.execute(GROUP_BY.format(t=table)).fetchall()
                    times.append(time.perf_counter() - t0)
            return statistics.median(times)

        n = max(5, a.runs * 3)
        res["groupby_postgres_ms"] = round(group_by(a.pg, "bench_serve.orders", n) * 1000, 1)
        res["groupby_strata_ms"] = round(group_by(strata_pg, "bench.orders", n) * 1000, 1)

        log("Policy overhead: a row filter and two masks vs the same rows without")

        def policy(user, sql):
            url = f"postgresql://{user}:{PASSWORD}@127.0.0.1:{pg_port}/strata"
            with psycopg.connect(url) as c:
                c.execute(sql).fetchall()
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    c.execute(sql).fetchall()
                    times.append(time.perf_counter() - t0)
            return statistics.median(times)

        agg = "SELECT count(*), max(o_clerk), max(o_comment), sum(o_totalprice) FROM bench.orders"
        res["policy_plain_ms"] = round(policy("admin", agg + " WHERE o_orderstatus = 'F'") * 1000, 1)
        res["policy_secured_ms"] = round(policy("analyst", agg) * 1000, 1)

        log("Point lookups by key")
        levels = [int(c) for c in a.clients.split(",")]
        res["lookups_postgres"], res["lookups_strata"] = [], []
        q = "SELECT * FROM {t} WHERE o_orderkey = %s"
        for c in levels:
            res["lookups_postgres"].append(lookups(
                c, a.seconds, lambda: psycopg.connect(a.pg, autocommit=True),
                lambda conn, k: len(conn.execute(q.format(t="bench_serve.orders"), (k,)).fetchall()),
                keys))
            res["lookups_strata"].append(lookups(
                c, a.seconds, lambda: psycopg.connect(strata_pg, autocommit=True),
                lambda conn, k: len(conn.execute(q.format(t="bench.orders"), (k,)).fetchall()),
                keys))

        def rest_lookup(_conn, k):
            req = urllib.request.Request(
                f"http://127.0.0.1:{http_port}/api/v1/tables/bench/orders?o_orderkey=eq.{k}",
                headers={"Authorization": basic})
            with urllib.request.urlopen(req, timeout=60) as r:
                return len(json.load(r)["rows"])

        res["lookups_rest_strata"] = [lookups(8, a.seconds, lambda: None, rest_lookup, keys)]
    finally:
        server.terminate()
        server.wait()

    os.makedirs(a.out, exist_ok=True)
    json.dump(R, open(os.path.join(a.out, "serve.json"), "w"), indent=1)
    report = render(R)
    open(os.path.join(a.out, "report.md"), "w").write(report)
    print(report)


def ratio(x, y):
    return f"{x / y:.2f}x" if x and y else "n/a"


def render(R):
    r = R["results"]
    out = [f"# Serving benchmark ({R['rows']:,} orders)", "",
           "| measurement | PostgreSQL | Strata | Strata / PostgreSQL | target |",
           "|---|---|---|---|---|"]
    out.append(f"| full fetch, psycopg | {r['fetch_psycopg_postgres_s']:.2f} s | "
               f"{r['fetch_psycopg_strata_s']:.2f} s | "
               f"{ratio(r['fetch_psycopg_strata_s'], r['fetch_psycopg_postgres_s'])} | <= 1x |")
    out.append(f"| full fetch, Arrow (ADBC; Strata over Flight SQL) | {r['fetch_adbc_postgres_s']:.2f} s | "
               f"{r['fetch_flight_strata_s']:.2f} s | "
               f"{ratio(r['fetch_flight_strata_s'], r['fetch_adbc_postgres_s'])} | Flight <= 0.5 s |")
    out.append(f"| full fetch, REST Arrow IPC | | {r['fetch_rest_arrow_strata_s']:.2f} s | | |")
    out.append(f"| group-by over all rows (median) | {r['groupby_postgres_ms']} ms | "
               f"{r['groupby_strata_ms']} ms | "
               f"{ratio(r['groupby_strata_ms'], r['groupby_postgres_ms'])} | <= 0.2x (5x throughput) |")
    for pg, st in zip(r["lookups_postgres"], r["lookups_strata"]):
        if "error" in pg or "error" in st:
            out.append(f"| point lookups | {pg} | {st} | | |")
            continue
        out.append(f"| point lookups, {pg['clients']} client(s): qps / p99 | "
                   f"{pg['qps']} / {pg['p99_ms']} ms | {st['qps']} / {st['p99_ms']} ms | "
                   f"{ratio(st['p99_ms'], pg['p99_ms'])} (p99) | p99 <= 5 ms |")
    rl = r["lookups_rest_strata"][0]
    if "error" not in rl:
        out.append(f"| point lookups, REST, 8 clients: qps / p99 | | {rl['qps']} / {rl['p99_ms']} ms | | |")
    out.append("")
    out.append(f"Policy overhead (row filter + two masks, aggregate over the filtered rows): "
               f"{r['policy_secured_ms']} ms vs {r['policy_plain_ms']} ms without policies = "
               f"{ratio(r['policy_secured_ms'], r['policy_plain_ms'])} (target <= 1.1x).")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
