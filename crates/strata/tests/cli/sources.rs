//! `strata sources` and `strata ingest` against the machine's PostgreSQL.

use crate::{ok, project, stderr, strata};

fn psql(url: &str, sql: &str) {
    let o = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql runs");
    assert!(
        o.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn ingest_a_postgres_source_end_to_end() {
    let Ok(url) = std::env::var("STRATA_IT_POSTGRES") else {
        eprintln!("SKIP ingest_a_postgres_source_end_to_end: STRATA_IT_POSTGRES is not set");
        return;
    };
    let schema = format!("cli_src_{}", std::process::id());
    psql(
        &url,
        &format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
             CREATE TABLE {schema}.orders (id int PRIMARY KEY, amount numeric(10,2), updated_at timestamptz NOT NULL);
             INSERT INTO {schema}.orders SELECT g, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 5000) g;"
        ),
    );
    let (_tmp, dir) = project();
    std::fs::write(
        dir.join("sources/shop.yml"),
        format!(
            "type: postgres\nurl: {url}\nschemas: [{schema}]\nstreams:\n  - table: {schema}.orders\n    mode: incremental\n    cursor: updated_at\n    primary_key: [id]\n"
        ),
    )
    .unwrap();
    let listed = ok(&dir, &["sources", "list"]);
    assert!(
        listed.contains("raw.shop_orders") && listed.contains("incremental"),
        "{listed}"
    );
    assert!(ok(&dir, &["sources", "check", "shop"]).contains("connected"));
    let found = ok(&dir, &["sources", "discover", "shop"]);
    assert!(
        found.contains(&format!("{schema}.orders")) && found.contains("primary_key: [id]"),
        "{found}"
    );

    let out = ok(&dir, &["ingest", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report[0]["rows"], 5000);
    psql(
        &url,
        &format!(
            "UPDATE {schema}.orders SET amount = 0, updated_at = '2030-01-01' WHERE id <= 10;"
        ),
    );
    let out = ok(&dir, &["ingest", "shop.orders", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The row tied at the previous cursor is re-read, plus the 10 updated rows.
    assert_eq!(report[0]["rows"], 11, "{out}");
    assert_eq!(
        ok(
            &dir,
            &[
                "sql",
                "select count(*) as n, sum(case when amount = 0 then 1 else 0 end) as zero from raw.shop_orders",
                "-f",
                "csv"
            ]
        ),
        "n,zero\n5000,10\n"
    );
    let history = ok(&dir, &["sources", "history"]);
    // Each stream's run records its rows and the bytes it loaded.
    assert!(
        history
            .lines()
            .any(|l| l.contains("shop.orders") && l.contains("success") && l.contains(" KB")),
        "{history}"
    );
    assert!(
        history.contains("shop.orders") && history.contains("success"),
        "{history}"
    );

    // Unknown names and unreachable servers: clear messages, non-zero exit.
    let o = strata(&dir, &["ingest", "shop.nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("has no stream `nope`"),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        dir.join("sources/down.yml"),
        "type: postgres\nurl: postgres://strata:hunter2@127.0.0.1:1/x\nstreams:\n  - table: t\n",
    )
    .unwrap();
    let o = strata(&dir, &["sources", "check", "down"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unreachable") && !stderr(&o).contains("hunter2"),
        "{}",
        stderr(&o)
    );
    // One stream failing does not stop the others; the exit code says something failed.
    let o = strata(&dir, &["ingest"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 of 2 streams failed (down.t)"),
        "{}",
        stderr(&o)
    );
    psql(&url, &format!("DROP SCHEMA {schema} CASCADE"));
}

#[test]
fn ingest_files_with_rejected_lines_and_query_them() {
    let (_tmp, dir) = project();
    std::fs::create_dir_all(dir.join("landing/orders")).unwrap();
    std::fs::write(
        dir.join("landing/orders/jan.csv"),
        "Order ID,Amount,Placed On\n1,10.5,2024-01-01\n2,oops,2024-01-02\n3,7,2024-01-03\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sources/drops.yml"),
        "type: files\nurl: landing\nstreams:\n  - name: orders\n    mode: incremental\n    primary_key: [order_id]\n    options:\n      path: orders/*.csv\n      column_types: amount=double\n",
    )
    .unwrap();
    assert!(ok(&dir, &["sources", "check", "drops"]).contains("connected"));
    let found = ok(&dir, &["sources", "discover", "drops"]);
    assert!(
        found.contains("order_id Int64")
            && found.contains("amount Float64")
            && found.contains("placed_on Date32"),
        "{found}"
    );
    let out = ok(&dir, &["ingest"]);
    assert!(
        out.contains("1 rows rejected → raw.drops_orders__rejected"),
        "{out}"
    );
    let q = ok(
        &dir,
        &[
            "sql",
            "--format",
            "csv",
            "select line, reason from raw.drops_orders__rejected",
        ],
    );
    assert!(
        q.contains("3,column `amount`: `oops` is not a number"),
        "{q}"
    );
    // A second run finds no new file and commits nothing.
    let again = ok(&dir, &["ingest", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(report[0]["rows"], 0);
    assert_eq!(report[0]["version"], serde_json::Value::Null);
}

#[test]
fn schema_changes_are_applied_and_listed_in_history() {
    let (_tmp, dir) = project();
    std::fs::create_dir_all(dir.join("landing")).unwrap();
    std::fs::write(dir.join("landing/1.csv"), "id,qty,note\n1,2,a\n").unwrap();
    std::fs::write(
        dir.join("sources/drops.yml"),
        "type: files\nurl: landing\nstreams:\n  - name: items\n    mode: incremental\n    options:\n      path: \"*.csv\"\n",
    )
    .unwrap();
    ok(&dir, &["ingest"]);
    // The next file: `qty` has decimals (Int64 → Float64), `note` is gone, `size` is new.
    std::fs::write(dir.join("landing/2.csv"), "id,qty,size\n2,2.5,XL\n").unwrap();
    let out = ok(&dir, &["ingest"]);
    assert!(
        out.contains("added columns: size")
            && out.contains("`qty` widened from Int64 to Float64: applied"),
        "{out}"
    );
    let q = ok(
        &dir,
        &[
            "sql",
            "--format",
            "csv",
            "select id, qty, note, size from raw.drops_items order by id",
        ],
    );
    assert!(q.contains("1,2.0,a,\n2,2.5,,XL"), "{q}");
    let history = ok(&dir, &["sources", "history"]);
    for expected in [
        "Schema changes",
        "drops.items",
        "qty",
        "widened",
        "note",
        "removed",
        "kept (NULL from now on)",
        "size",
        "added",
    ] {
        assert!(history.contains(expected), "{expected} in {history}");
    }
}

#[test]
fn clone_a_postgres_schema_and_query_it() {
    let Ok(url) = std::env::var("STRATA_IT_POSTGRES") else {
        eprintln!("SKIP clone_a_postgres_schema_and_query_it: STRATA_IT_POSTGRES is not set");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("cli_clone_{}_{nanos}", std::process::id());
    psql(
        &url,
        &format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.orders (id int PRIMARY KEY, amount numeric(10,2), updated_at timestamptz NOT NULL);
             COMMENT ON TABLE {schema}.orders IS 'Every order';
             COMMENT ON COLUMN {schema}.orders.amount IS 'Total, VAT included';
             INSERT INTO {schema}.orders SELECT g, g, '2024-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 100) g;
             CREATE TABLE {schema}.tags (name text);
             INSERT INTO {schema}.tags VALUES ('a'), ('b');"
        ),
    );
    let (_tmp, dir) = project();
    std::fs::write(
        dir.join("sources/shop.yml"),
        format!("type: postgres\nurl: {url}\nschemas: [{schema}]\nclone: true\n"),
    )
    .unwrap();
    let listed = ok(&dir, &["sources", "list"]);
    assert!(
        listed.contains("raw.shop_orders")
            && listed.contains("incremental")
            && listed.contains("raw.shop_tags")
            && listed.contains("clone"),
        "{listed}"
    );
    let out = ok(&dir, &["ingest", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report.as_array().unwrap().len(), 2, "{out}");
    assert_eq!(
        ok(
            &dir,
            &[
                "sql",
                "select count(*) as n, sum(amount) as total from raw.shop_orders",
                "-f",
                "csv"
            ]
        ),
        "n,total\n100,5050.00\n"
    );
    let described = ok(&dir, &["describe", "raw.shop_orders"]);
    assert!(
        described.contains("Description: Every order") && described.contains("Total, VAT included"),
        "{described}"
    );

    // A cloned stream runs alone by name; a new table is picked up by the next run.
    psql(
        &url,
        &format!(
            "UPDATE {schema}.orders SET amount = 0, updated_at = '2030-01-01' WHERE id = 7;
             CREATE TABLE {schema}.notes (id int PRIMARY KEY, body text);
             INSERT INTO {schema}.notes VALUES (1, 'hi');"
        ),
    );
    let out = ok(&dir, &["ingest", "shop.orders", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The row tied at the previous cursor, and the updated one.
    assert_eq!(report[0]["rows"], 2, "{out}");
    let out = ok(&dir, &["ingest", "shop", "--json"]);
    assert!(out.contains("shop.notes"), "{out}");
    assert_eq!(
        ok(
            &dir,
            &[
                "sql",
                "select (select sum(amount) from raw.shop_orders) as total, (select body from raw.shop_notes) as body",
                "-f",
                "csv"
            ]
        ),
        "total,body\n5043.00,hi\n"
    );
    let o = strata(&dir, &["ingest", "shop.nope"]);
    assert!(
        stderr(&o).contains("has no stream `nope`; its streams: notes, orders, tags"),
        "{}",
        stderr(&o)
    );
    psql(&url, &format!("DROP SCHEMA {schema} CASCADE"));
}
