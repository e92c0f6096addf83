//! The paths a new user takes: init, load, query, inspect.

use crate::{ok, project, stderr, strata};

#[test]
fn init_create_query_and_read_with_python_deltalake() {
    let (_tmp, dir) = project();
    ok(&dir, &["sql", "create table raw.t as select 1 as x"]);
    let out = ok(&dir, &["sql", "select * from raw.t", "--format", "csv"]);
    assert_eq!(out, "x\n1\n");

    // Works from a subdirectory too (the project is found by walking up).
    let out = ok(
        &dir.join("models"),
        &["sql", "select x + 1 as y from raw.t", "--format", "json"],
    );
    assert_eq!(out.trim(), r#"[{"y":2}]"#);

    // An independent reader sees the same Delta table.
    let Ok(python) = std::env::var("STRATA_PYTHON") else {
        eprintln!("skipping the Python deltalake check: STRATA_PYTHON is not set");
        return;
    };
    let table = dir.join(".strata/lake/raw/t");
    let o = std::process::Command::new(python)
        .args([
            "-c",
            // os._exit: Python deltalake sometimes aborts in its exit handlers after the
            // work is done ("terminate called without an active exception").
            "import os, sys, deltalake; t = deltalake.DeltaTable(sys.argv[1]); print(t.version(), t.to_pyarrow_table().to_pylist(), flush=True); os._exit(0)",
            table.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0 [{'x': 1}]");
}

#[test]
fn formats_tables_describe_and_runs() {
    let (tmp, dir) = project();
    ok(
        &dir,
        &[
            "sql",
            "create table raw.people as select * from (values (1, 'ana', null), (2, 'bruno', 3.5)) as t(id, name, score);
             insert into raw.people values (3, 'carla', 1.0)",
        ],
    );
    let table = ok(&dir, &["sql", "select * from raw.people order by id"]);
    assert!(table.contains("│  1 ┆ ana   ┆  NULL │"), "{table}");
    assert!(table.contains("(3 rows)"), "{table}");
    let nd = ok(
        &dir,
        &[
            "sql",
            "select id from raw.people order by id",
            "-f",
            "ndjson",
        ],
    );
    assert_eq!(nd, "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n");
    let file = tmp.path().join("out.parquet");
    ok(
        &dir,
        &[
            "sql",
            "select * from raw.people",
            "-f",
            "parquet",
            "-o",
            file.to_str().unwrap(),
        ],
    );
    let back = ok(
        &dir,
        &[
            "sql",
            &format!("select count(*) as n from '{}'", file.display()),
            "-f",
            "csv",
        ],
    );
    assert_eq!(back, "n\n3\n");

    let tables = ok(&dir, &["tables"]);
    assert!(tables.contains("people"), "{tables}");
    let json: serde_json::Value = serde_json::from_str(&ok(&dir, &["tables", "--json"])).unwrap();
    assert_eq!(json[0]["table"], "raw.people");
    assert_eq!(json[0]["rows"], 3);
    assert_eq!(json[0]["version"], 1);

    let d: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["describe", "raw.people", "--json"])).unwrap();
    assert_eq!(d["columns"][1]["name"], "name");
    assert_eq!(d["history"][0]["version"], 1);
    assert_eq!(d["history"][1]["operation"], "WRITE");
    let human = ok(&dir, &["describe", "raw.people"]);
    assert!(human.contains("History (newest first)"), "{human}");

    // Each command was recorded in the metadata store.
    let runs = ok(&dir, &["runs"]);
    assert!(runs.contains("sql") && runs.contains("success"), "{runs}");
}

#[test]
fn optimize_orders_a_table_by_key_columns() {
    let (_tmp, dir) = project();
    ok(
        &dir,
        &[
            "sql",
            "create table raw.k as select * from (values (3, 'c'), (1, 'a'), (2, 'b')) as t(id, name)",
        ],
    );
    ok(&dir, &["sql", "insert into raw.k values (0, 'z')"]);
    let out = ok(&dir, &["optimize", "raw.k", "--zorder-by", "id"]);
    assert!(
        out.contains("2 files rewritten into 1 ordered by id"),
        "{out}"
    );
    // Read in file order (no ORDER BY): the rows follow the key.
    let rows = ok(&dir, &["sql", "select id from raw.k", "-f", "csv"]);
    assert_eq!(rows, "id\n0\n1\n2\n3\n");
    let o = strata(&dir, &["optimize", "raw.k", "--zorder-by", "nope"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no column `nope`"), "{}", stderr(&o));
    // Ordering needs a table named.
    let o = strata(&dir, &["optimize", "--zorder-by", "id"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("<TABLE>"), "{}", stderr(&o));
}

#[test]
fn stdin_multi_statement_time_travel_optimize_vacuum() {
    let (_tmp, dir) = project();
    let o = crate::strata_with_input(
        &dir,
        &["sql", "-"],
        b"create table raw.n as select 1 as v;\n insert into raw.n values (2);\n insert into raw.n values (3);",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v1 = ok(
        &dir,
        &[
            "sql",
            "select sum(v) as s from raw.n version as of 1",
            "-f",
            "csv",
        ],
    );
    assert_eq!(v1, "s\n3\n");
    let opt = ok(&dir, &["optimize", "raw.n"]);
    assert!(opt.contains("3 small files compacted into 1"), "{opt}");
    let after = ok(&dir, &["sql", "select sum(v) as s from raw.n", "-f", "csv"]);
    assert_eq!(after, "s\n6\n");
    // The retention guard refuses to delete files time travel still needs.
    let o = strata(&dir, &["vacuum", "raw.n", "--retain-hours", "0"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("shorter than the table's minimum"),
        "{}",
        stderr(&o)
    );
    let dry = ok(
        &dir,
        &[
            "vacuum",
            "raw.n",
            "--retain-hours",
            "0",
            "--force",
            "--dry-run",
        ],
    );
    assert!(dry.contains("would delete 3 files"), "{dry}");
    let done = ok(&dir, &["vacuum", "raw.n", "--retain-hours", "0", "--force"]);
    assert!(done.contains("deleted 3 files"), "{done}");
    assert_eq!(
        ok(&dir, &["sql", "select sum(v) as s from raw.n", "-f", "csv"]),
        "s\n6\n"
    );
}

#[test]
fn demo_loads_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(tmp.path(), &["demo", "shop", "--scale", "2000"]);
    assert!(out.contains("Revenue by month"), "{out}");
    // The data arrived through sources: an application database, CSV exports, a JSON catalog.
    for stream in [
        "shop.orders",
        "shop.order_items",
        "shop.customers",
        "exports.payments",
        "exports.products",
    ] {
        assert!(out.contains(stream), "{stream} in {out}");
    }
    assert!(tmp.path().join("shop/data/lumen_goods.db").exists());
    assert!(out.contains("Top 5 products by revenue"), "{out}");
    let dir = tmp.path().join("shop");
    let n = ok(
        &dir,
        &["sql", "select count(*) as n from raw.orders", "-f", "csv"],
    );
    assert_eq!(n, "n\n2000\n");
    let c = ok(
        &dir,
        &[
            "sql",
            "select count(*) as n from raw.customers",
            "-f",
            "csv",
        ],
    );
    assert_eq!(c, "n\n400\n");
    // Every order's payment matches its items, except cancelled orders, which have none.
    let check = ok(
        &dir,
        &[
            "sql",
            "select count(*) as bad from raw.orders o
             left join (select order_id, sum(quantity * unit_price) as total from raw.order_items group by 1) i on i.order_id = o.order_id
             left join raw.payments p on p.order_id = o.order_id
             where (o.status = 'cancelled' and p.order_id is not null)
                or (o.status <> 'cancelled' and (p.amount is null or p.amount <> i.total))",
            "-f",
            "csv",
        ],
    );
    assert_eq!(check, "bad\n0\n");
    // Running the demo again reloads it in place (same deterministic data).
    ok(tmp.path(), &["demo", "shop", "--scale", "2000", "--quiet"]);
    let n = ok(
        &dir,
        &["sql", "select count(*) as n from raw.orders", "-f", "csv"],
    );
    assert_eq!(n, "n\n2000\n");
}

#[test]
fn environments_select_another_lake() {
    let (_tmp, dir) = project();
    let yml = std::fs::read_to_string(dir.join("strata.yml")).unwrap();
    let yml = yml.replace(
        "  prod:\n    engine:",
        "  prod:\n    lake: .strata/prod-lake\n    engine:",
    );
    std::fs::write(dir.join("strata.yml"), yml).unwrap();
    ok(
        &dir,
        &["sql", "create table raw.where_am_i as select 'dev' as env"],
    );
    ok(
        &dir,
        &[
            "--env",
            "prod",
            "sql",
            "create table raw.where_am_i as select 'prod' as env",
        ],
    );
    assert_eq!(
        ok(
            &dir,
            &["sql", "select env from raw.where_am_i", "-f", "csv"]
        ),
        "env\ndev\n"
    );
    assert_eq!(
        ok(
            &dir,
            &[
                "sql",
                "select env from raw.where_am_i",
                "-f",
                "csv",
                "--env",
                "prod"
            ]
        ),
        "env\nprod\n"
    );
    assert!(
        dir.join(".strata/prod-lake/raw/where_am_i/_delta_log")
            .is_dir()
    );
}

#[test]
fn shell_runs_multi_line_statements_and_meta_commands() {
    let (_tmp, dir) = project();
    ok(&dir, &["sql", "create table raw.s as select 7 as seven"]);
    let o = crate::strata_with_input(
        &dir,
        &["shell"],
        b"select seven * 6\n  as answer\n from raw.s;\n\\d\nselec oops;\n\\q\n",
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("answer") && out.contains("42"), "{out}");
    assert!(out.contains("raw") && out.contains("BASE TABLE"), "{out}");
    assert!(err.contains("SQL syntax error"), "{err}");
    assert!(dir.join(".strata/history").is_file());
}

#[test]
fn demo_can_keep_its_application_tables_in_postgres() {
    let Ok(url) = std::env::var("STRATA_IT_POSTGRES") else {
        eprintln!(
            "SKIP demo_can_keep_its_application_tables_in_postgres: STRATA_IT_POSTGRES is not set"
        );
        return;
    };
    // Each run replaces the `lumen_goods` schema: use a database of this test's own.
    let db = format!("demo_it_{}", std::process::id());
    let admin = |sql: &str| {
        let o = std::process::Command::new("psql")
            .args([url.as_str(), "-qc", sql])
            .output()
            .expect("psql runs");
        assert!(
            o.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    admin(&format!("DROP DATABASE IF EXISTS {db}"));
    admin(&format!("CREATE DATABASE {db}"));
    let own = format!("{}/{db}", url.rsplit_once('/').unwrap().0);
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(
        tmp.path(),
        &["demo", "shop", "--scale", "1500", "--postgres", &own],
    );
    assert!(out.contains("PostgreSQL schema lumen_goods"), "{out}");
    let dir = tmp.path().join("shop");
    let yml = std::fs::read_to_string(dir.join("sources/shop.yml")).unwrap();
    assert!(
        yml.contains("type: postgres") && yml.contains("lumen_goods.orders"),
        "{yml}"
    );
    let n = ok(
        &dir,
        &["sql", "select count(*) as n from raw.orders", "-f", "csv"],
    );
    assert_eq!(n, "n\n1500\n");
    admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}
