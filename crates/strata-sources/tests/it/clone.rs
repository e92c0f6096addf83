//! `clone: true` against PostgreSQL (`STRATA_IT_POSTGRES`), MariaDB (`STRATA_IT_MYSQL`) and
//! a SQLite file: a schema of three tables (key + change timestamp, key only, no key) lands
//! whole, with keys, column comments and table comments; after the source changes (a row
//! updated, rows inserted, a table added) the next run merges the incremental table,
//! reloads the others and picks up the new table.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use sqlx::{AssertSqlSafe, ConnectOptions};
use strata_lake::Lake;
use strata_project::{Redactor, SourceDef, SyncMode, load_source};
use strata_sources::clone::expand_clone;
use strata_sources::ingest::{IngestOptions, Progress, StreamReport, run_stream};
use tokio_postgres::NoTls;

use crate::rows;

struct Env {
    tmp: tempfile::TempDir,
    lake: Lake,
}

async fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(tmp.path().join("lake")).unwrap();
    let lake = Lake::open(&url, Default::default()).await.unwrap();
    Env { tmp, lake }
}

impl Env {
    /// Expands `shop.yml` and runs every stream; the streams by name, and the reports.
    async fn clone_run(&self, yml: &str) -> (SourceDef, Vec<StreamReport>) {
        let p = self.tmp.path().join("shop.yml");
        std::fs::write(&p, yml).unwrap();
        let def = load_source(&p, &Redactor::new()).unwrap();
        let src = strata_sources::connect(&def).unwrap();
        let def = expand_clone(&def, src.as_ref()).await.unwrap();
        let mut out = Vec::new();
        for s in &def.streams {
            out.push(
                run_stream(
                    &self.lake,
                    src.as_ref(),
                    &def,
                    s,
                    &IngestOptions::default(),
                    Arc::new(Progress::default()),
                )
                .await
                .unwrap_or_else(|e| panic!("stream {}: {e}", s.name)),
            );
        }
        (def, out)
    }

    /// `name:type:comment` per column, then the table's description.
    async fn described(&self, table: &str) -> (Vec<String>, Option<String>) {
        let info = self.lake.table_info(&table.parse().unwrap()).await.unwrap();
        let cols = info
            .schema
            .fields()
            .iter()
            .map(|f| {
                format!(
                    "{}:{}",
                    f.name(),
                    f.metadata().get("comment").cloned().unwrap_or_default()
                )
            })
            .collect();
        (cols, info.description)
    }
}

fn modes(def: &SourceDef) -> Vec<String> {
    def.streams
        .iter()
        .map(|s| {
            format!(
                "{} {} {:?} cursor={} key={} cloned={}",
                s.name,
                s.destination,
                s.mode,
                s.cursor.as_deref().unwrap_or("-"),
                s.primary_key.join(","),
                s.cloned
            )
        })
        .collect()
}

fn rows_of(reports: &[StreamReport], stream: &str) -> u64 {
    reports
        .iter()
        .find(|r| r.stream == stream)
        .unwrap_or_else(|| panic!("no report for {stream}"))
        .rows
}

/// What every database's test checks once its schema is loaded the first time.
async fn check_first_run(env: &Env, def: &SourceDef, reports: &[StreamReport]) {
    assert_eq!(
        modes(def),
        [
            "customers raw.shop_customers FullRefresh cursor=- key=id cloned=true",
            "events raw.shop_events FullRefresh cursor=- key= cloned=true",
            "orders raw.shop_orders Incremental cursor=updated_at key=id cloned=true",
        ]
    );
    assert_eq!(rows_of(reports, "orders"), 3);
    assert_eq!(
        rows(&env.lake, "raw.shop_orders", "id, amount").await,
        ["1|10.50", "2|20.00", "3|30.25"]
    );
    assert_eq!(
        rows(&env.lake, "raw.shop_customers", "id, name").await,
        ["1|Ada", "2|Grace"]
    );
    assert_eq!(
        rows(&env.lake, "raw.shop_events", "kind").await,
        ["login", "logout"]
    );
}

/// After: order 2 updated, order 4 inserted, customer 3 inserted and 1 renamed, one event
/// more, and a new table `notes`.
async fn check_second_run(env: &Env, def: &SourceDef, reports: &[StreamReport]) {
    assert_eq!(def.streams.len(), 4, "{:?}", modes(def));
    assert!(
        modes(def).contains(&"notes raw.shop_notes FullRefresh cursor=- key=id cloned=true".into()),
        "{:?}",
        modes(def)
    );
    // The row tied at the last cursor (order 3), the updated one and the new one.
    assert_eq!(rows_of(reports, "orders"), 3);
    assert_eq!(
        rows(&env.lake, "raw.shop_orders", "id, amount").await,
        ["1|10.50", "2|99.00", "3|30.25", "4|40.00"]
    );
    assert_eq!(
        rows(&env.lake, "raw.shop_customers", "id, name").await,
        ["1|Ada L.", "2|Grace", "3|Edsger"]
    );
    assert_eq!(
        rows(&env.lake, "raw.shop_events", "kind").await,
        ["login", "login", "logout"]
    );
    assert_eq!(
        rows(&env.lake, "raw.shop_notes", "id, body").await,
        ["1|hello"]
    );
    let history = env
        .lake
        .history(&"raw.shop_orders".parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(history[0].operation, "MERGE", "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_a_postgres_schema() {
    let Ok(base) = std::env::var("STRATA_IT_POSTGRES") else {
        eprintln!("SKIP clone_a_postgres_schema: STRATA_IT_POSTGRES is not set");
        return;
    };
    let (client, conn) = tokio_postgres::connect(&base, NoTls).await.unwrap();
    tokio::spawn(conn);
    let schema = format!("clone_it_{}", uuid::Uuid::new_v4().simple());
    let exec = async |sql: &str| {
        let sql = sql.replace("{s}", &schema);
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    };
    exec(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.orders (id int PRIMARY KEY, amount numeric(10,2) NOT NULL,
           updated_at timestamptz NOT NULL);
         COMMENT ON TABLE {s}.orders IS 'Every order';
         COMMENT ON COLUMN {s}.orders.amount IS 'Total, VAT included';
         COMMENT ON COLUMN {s}.orders.updated_at IS 'Last change';
         INSERT INTO {s}.orders VALUES (1, 10.5, '2024-01-01 10:00Z'), (2, 20, '2024-01-02 10:00Z'),
           (3, 30.25, '2024-01-03 10:00Z');
         CREATE TABLE {s}.customers (id int PRIMARY KEY, name text);
         COMMENT ON COLUMN {s}.customers.name IS 'Full name';
         INSERT INTO {s}.customers VALUES (1, 'Ada'), (2, 'Grace');
         CREATE TABLE {s}.events (at timestamptz, kind text);
         INSERT INTO {s}.events VALUES ('2024-01-01Z', 'login'), ('2024-01-02Z', 'logout');
         CREATE VIEW {s}.big_orders AS SELECT * FROM {s}.orders WHERE amount > 15;",
    )
    .await;
    let env = env().await;
    let yml = format!("type: postgres\nurl: {base}\nschemas: [{schema}]\nclone: true\n");
    let (def, reports) = env.clone_run(&yml).await;
    check_first_run(&env, &def, &reports).await;
    assert_eq!(
        env.described("raw.shop_orders").await,
        (
            vec![
                "id:".to_string(),
                "amount:Total, VAT included".into(),
                "updated_at:Last change".into()
            ],
            Some("Every order".into())
        )
    );
    assert_eq!(
        env.described("raw.shop_customers").await.0,
        ["id:", "name:Full name"]
    );

    exec(
        "UPDATE {s}.orders SET amount = 99, updated_at = '2024-02-01Z' WHERE id = 2;
         INSERT INTO {s}.orders VALUES (4, 40, '2024-02-02Z');
         UPDATE {s}.customers SET name = 'Ada L.' WHERE id = 1;
         INSERT INTO {s}.customers VALUES (3, 'Edsger');
         INSERT INTO {s}.events VALUES ('2024-02-01Z', 'login');
         CREATE TABLE {s}.notes (id bigint PRIMARY KEY, body text);
         INSERT INTO {s}.notes VALUES (1, 'hello');
         COMMENT ON COLUMN {s}.orders.amount IS 'Total with VAT';
         COMMENT ON COLUMN {s}.customers.name IS NULL;
         COMMENT ON COLUMN {s}.customers.id IS 'Customer number';",
    )
    .await;
    let (def, reports) = env.clone_run(&yml).await;
    check_second_run(&env, &def, &reports).await;
    // Comments follow the source's, whether rows were merged or replaced.
    assert_eq!(
        env.described("raw.shop_orders").await.0,
        ["id:", "amount:Total with VAT", "updated_at:Last change"]
    );
    assert_eq!(
        env.described("raw.shop_customers").await.0,
        ["id:Customer number", "name:"]
    );

    // A stream declared in the file replaces the clone of its table.
    let yml = format!(
        "{yml}clone_exclude: [notes]\nstreams:\n  - table: {schema}.events\n    mode: append\n    destination: raw.events_log\n"
    );
    let (def, _) = env.clone_run(&yml).await;
    let names: Vec<_> = def
        .streams
        .iter()
        .map(|s| format!("{}:{}", s.name, s.cloned))
        .collect();
    assert_eq!(names, ["events:false", "customers:true", "orders:true"]);
    assert_eq!(
        rows(&env.lake, "raw.events_log", "kind").await,
        ["login", "login", "logout"]
    );
    exec("DROP SCHEMA {s} CASCADE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_a_mariadb_database() {
    let Ok(base) = std::env::var("STRATA_IT_MYSQL") else {
        eprintln!("SKIP clone_a_mariadb_database: STRATA_IT_MYSQL is not set");
        return;
    };
    let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&base).unwrap())
        .await
        .unwrap();
    let db = format!("clone_it_{}", uuid::Uuid::new_v4().simple());
    conn.query_drop(format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    conn.query_drop(format!("USE {db}")).await.unwrap();
    let mut exec = async |sql: &str| {
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            conn.query_drop(stmt)
                .await
                .unwrap_or_else(|e| panic!("{stmt}: {e}"));
        }
    };
    exec(
        "CREATE TABLE orders (id INT PRIMARY KEY, amount DECIMAL(10,2) NOT NULL COMMENT 'Total, VAT included',
           updated_at DATETIME(6) NOT NULL COMMENT 'Last change') COMMENT = 'Every order';
         INSERT INTO orders VALUES (1, 10.5, '2024-01-01 10:00'), (2, 20, '2024-01-02 10:00'),
           (3, 30.25, '2024-01-03 10:00');
         CREATE TABLE customers (id INT PRIMARY KEY, name TEXT COMMENT 'Full name');
         INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace');
         CREATE TABLE events (at DATETIME, kind VARCHAR(20));
         INSERT INTO events VALUES ('2024-01-01', 'login'), ('2024-01-02', 'logout');
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 15;",
    )
    .await;
    let root = base.rsplit_once('/').map(|(r, _)| r).unwrap_or(&base);
    let env = env().await;
    let yml = format!("type: mysql\nurl: {root}/{db}\nclone: true\n");
    let (def, reports) = env.clone_run(&yml).await;
    check_first_run(&env, &def, &reports).await;
    assert_eq!(
        env.described("raw.shop_orders").await,
        (
            vec![
                "id:".to_string(),
                "amount:Total, VAT included".into(),
                "updated_at:Last change".into()
            ],
            Some("Every order".into())
        )
    );
    assert_eq!(
        env.described("raw.shop_customers").await.0,
        ["id:", "name:Full name"]
    );

    exec(
        "UPDATE orders SET amount = 99, updated_at = '2024-02-01' WHERE id = 2;
         INSERT INTO orders VALUES (4, 40, '2024-02-02');
         UPDATE customers SET name = 'Ada L.' WHERE id = 1;
         INSERT INTO customers VALUES (3, 'Edsger');
         INSERT INTO events VALUES ('2024-02-01', 'login');
         CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT);
         INSERT INTO notes VALUES (1, 'hello');",
    )
    .await;
    let (def, reports) = env.clone_run(&yml).await;
    check_second_run(&env, &def, &reports).await;
    exec(&format!("DROP DATABASE {db}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.db");
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    let mut exec = async |sql: &str| {
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    };
    exec(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, amount DECIMAL(10,2) NOT NULL,
           updated_at DATETIME NOT NULL);
         INSERT INTO orders VALUES (1, 10.5, '2024-01-01 10:00:00'), (2, 20, '2024-01-02 10:00:00'),
           (3, 30.25, '2024-01-03 10:00:00');
         CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace');
         CREATE TABLE events (at DATETIME, kind TEXT);
         INSERT INTO events VALUES ('2024-01-01', 'login'), ('2024-01-02', 'logout');
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 15;",
    )
    .await;
    let env = env().await;
    let yml = format!(
        "type: sqlite\nurl: sqlite://{}\nclone: true\n",
        path.display()
    );
    let (def, reports) = env.clone_run(&yml).await;
    check_first_run(&env, &def, &reports).await;
    // SQLite has no comments: the default description.
    let (cols, description) = env.described("raw.shop_orders").await;
    assert_eq!(cols, ["id:", "amount:", "updated_at:"]);
    assert_eq!(
        description.as_deref(),
        Some("Loaded by Strata from source `shop`, stream `orders`")
    );
    assert_eq!(def.streams[2].mode, SyncMode::Incremental);

    exec(
        "UPDATE orders SET amount = 99, updated_at = '2024-02-01 00:00:00' WHERE id = 2;
         INSERT INTO orders VALUES (4, 40, '2024-02-02 00:00:00');
         UPDATE customers SET name = 'Ada L.' WHERE id = 1;
         INSERT INTO customers VALUES (3, 'Edsger');
         INSERT INTO events VALUES ('2024-02-01', 'login');
         CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
         INSERT INTO notes VALUES (1, 'hello');",
    )
    .await;
    let (def, reports) = env.clone_run(&yml).await;
    check_second_run(&env, &def, &reports).await;
}
