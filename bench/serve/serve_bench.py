"""Serving benchmark: the same TPC-H `orders` table served by Strata (Postgres protocol,
Flight SQL, REST) and by PostgreSQL, measured in one run. Prints numbers and ratios; never
fails on one. Run through bench/serve/run.sh."""

import argparse
import base64
import concurrent.futures as cf
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def tpch_order_key_formula(keys):
    """TPC-H order keys are sparse: the j-th (1-based) is (j / 8) * 32 + j % 8. True when
    `keys` are exactly those, so generated clients can draw existing keys without a list."""
    return all(k == (j // 8) * 32 + j % 8 for j, k in enumerate(keys, start=1))


def pgbench_lookups(clients, seconds, url, table, n_keys, dense_keys, password):
    """Point lookups from pgbench (libpq, prepared statements, `clients` connections on up to
    two threads), each transaction one lookup of an existing key. Latencies come from
    pgbench's per-transaction log."""
    pgbench = shutil.which("pgbench")
    if not pgbench:
        return {"error": "pgbench is not installed"}
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "lookup.sql")
        with open(script, "w") as f:
            if dense_keys:
                f.write(f"\\set j random(1, {n_keys})\n\\set k (:j / 8) * 32 + :j % 8\n")
            else:
                f.write(f"\\set k random(1, {n_keys})\n")
            f.write(f"SELECT * FROM {table} WHERE o_orderkey = :k;\n")
        cmd = [pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)),
               "-T", str(max(1, round(seconds))), "-f", script, "-l",
               "--log-prefix", os.path.join(d, "tx"), url]
        env = dict(os.environ, PGPASSWORD=password) if password else dict(os.environ)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=d)
        if r.returncode != 0:
            return {"error": (r.stderr or r.stdout).strip().splitlines()[-1:]}
        lat = []
        for name in os.listdir(d):
            if name.startswith("tx."):
                with open(os.path.join(d, name)) as f:
                    lat.extend(int(line.split()[2]) for line in f if line.strip())
        failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    if not lat:
        return {"error": "no lookups"}
    lat.sort()
    return {
        "clients": clients, "lookups": len(lat), "qps": round(len(lat) / max(1, round(seconds)), 1),
        "p50_ms": round(lat[len(lat) // 2] / 1000, 2),
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000, 2),
        "errors": int(failed.group(1)) if failed else 0,
    }


def wrk_lookups(clients, seconds, base, auth, n_keys, dense_keys):
    """REST point lookups from wrk (`clients` connections on two threads) through the table
    endpoint, each request an existing key."""
    wrk = shutil.which("wrk")
    if not wrk:
        return None
    key = ("local j = math.random(1, %d)\n  local k = math.floor(j / 8) * 32 + j %% 8" % n_keys
           if dense_keys else "local k = math.random(1, %d)" % n_keys)
    lua = f"""
math.randomseed(7)
wrk.headers["Authorization"] = "{auth}"
request = function()
  {key}
  return wrk.format("GET", "/api/v1/tables/bench/orders?o_orderkey=eq." .. k)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""
    # One request first, as pgbench connects before it measures: the server checks a
    # password once per credential (argon2) and plans the question once, then keeps both.
    warm = urllib.request.Request(base + "/api/v1/tables/bench/orders?o_orderkey=eq.1",
                                  headers={"Authorization": auth})
    urllib.request.urlopen(warm, timeout=60).read()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
        script = f.name
    try:
        r = subprocess.run([wrk, "-t", str(min(clients, 2)), "-c", str(clients),
                            "-d", f"{max(1, round(seconds))}s", "-s", script, base],
                           capture_output=True, text=True)
    finally:
        os.remove(script)
    m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", r.stdout)
    if r.returncode != 0 or not m:
        return {"error": (r.stderr or r.stdout).strip()[-300:]}
    n, dur_us, p50, p99, bad_status, io_errors = map(int, m.groups())
    return {
        "clients": clients, "lookups": n, "qps": round(n / (dur_us / 1e6), 1),
        "p50_ms": round(p50 / 1000, 2), "p99_ms": round(p99 / 1000, 2),
        "errors": bad_status + io_errors,
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
        # A listing, as a BI table or a REST page shows one: both masked columns in the
        # output, the top 100 by price of the rows the policy keeps.
        top = ("SELECT o_orderkey, o_clerk, o_comment, o_totalprice FROM bench.orders{} "
               "ORDER BY o_totalprice DESC LIMIT 100")
        res["policy_listing_plain_ms"] = round(
            policy("admin", top.format(" WHERE o_orderstatus = 'F'")) * 1000, 1)
        res["policy_listing_secured_ms"] = round(policy("analyst", top.format("")) * 1000, 1)

        log("Point lookups by key: psycopg, one client")
        q = "SELECT * FROM {t} WHERE o_orderkey = %s"
        res["lookups_psycopg_postgres"] = lookups(
            1, a.seconds, lambda: psycopg.connect(a.pg, autocommit=True),
            lambda conn, k: len(conn.execute(q.format(t="bench_serve.orders"), (k,)).fetchall()),
            keys)
        res["lookups_psycopg_strata"] = lookups(
            1, a.seconds, lambda: psycopg.connect(strata_pg, autocommit=True),
            lambda conn, k: len(conn.execute(q.format(t="bench.orders"), (k,)).fetchall()),
            keys)

        log("Point lookups by key: pgbench, prepared, " + a.clients + " clients")
        levels = [int(c) for c in a.clients.split(",")]
        dense = tpch_order_key_formula(keys)
        span = len(keys) if dense else max(keys)
        res["lookups_postgres"], res["lookups_strata"] = [], []
        for c in levels:
            res["lookups_postgres"].append(pgbench_lookups(
                c, a.seconds, a.pg, "bench_serve.orders", span, dense, None))
            res["lookups_strata"].append(pgbench_lookups(
                c, a.seconds, f"postgresql://admin@127.0.0.1:{pg_port}/strata", "bench.orders",
                span, dense, PASSWORD))

        log("Point lookups through REST (wrk, 8 connections)")
        rest = wrk_lookups(8, a.seconds, f"http://127.0.0.1:{http_port}", basic, span, dense)
        if rest is None:
            def rest_lookup(_conn, k):
                req = urllib.request.Request(
                    f"http://127.0.0.1:{http_port}/api/v1/tables/bench/orders?o_orderkey=eq.{k}",
                    headers={"Authorization": basic})
                with urllib.request.urlopen(req, timeout=60) as r:
                    return len(json.load(r)["rows"])

            rest = lookups(8, a.seconds, lambda: None, rest_lookup, keys)
            rest["client"] = "python threads"
        res["lookups_rest_strata"] = [rest]
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
    pp, ps = r.get("lookups_psycopg_postgres", {}), r.get("lookups_psycopg_strata", {})
    if "p99_ms" in pp and "p99_ms" in ps:
        out.append(f"| point lookups, psycopg, 1 client: qps / p99 | {pp['qps']} / {pp['p99_ms']} ms | "
                   f"{ps['qps']} / {ps['p99_ms']} ms | | p99 <= 5 ms |")
    for pg, st in zip(r["lookups_postgres"], r["lookups_strata"]):
        if "error" in pg or "error" in st:
            out.append(f"| point lookups (pgbench) | {pg} | {st} | | |")
            continue
        out.append(f"| point lookups, pgbench, {pg['clients']} client(s): qps / p99 | "
                   f"{pg['qps']} / {pg['p99_ms']} ms | {st['qps']} / {st['p99_ms']} ms | "
                   f"{ratio(st['p99_ms'], pg['p99_ms'])} (p99) | p99 <= 5 ms |")
    rl = r["lookups_rest_strata"][0]
    if "error" not in rl:
        out.append(f"| point lookups, REST ({rl.get('client', 'wrk')}), 8 clients: qps / p99 | | "
                   f"{rl['qps']} / {rl['p99_ms']} ms | | |")
    else:
        out.append(f"| point lookups, REST | | {rl['error']} | | |")
    out.append("")
    out.append(f"Policy overhead (row filter + two masks, aggregate over the filtered rows): "
               f"{r['policy_secured_ms']} ms vs {r['policy_plain_ms']} ms without policies = "
               f"{ratio(r['policy_secured_ms'], r['policy_plain_ms'])} (target <= 1.1x).")
    if "policy_listing_secured_ms" in r:
        out.append("")
        out.append(f"Policy overhead (row filter + two masks, top 100 rows by price with both "
                   f"masked columns): {r['policy_listing_secured_ms']} ms vs "
                   f"{r['policy_listing_plain_ms']} ms without policies = "
                   f"{ratio(r['policy_listing_secured_ms'], r['policy_listing_plain_ms'])} "
                   f"(target <= 1.1x).")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
