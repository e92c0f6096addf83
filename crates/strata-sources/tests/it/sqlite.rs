//! SQLite (real database files in a temporary directory): type mapping with NULLs,
//! incremental merge with ties at the cursor, values that do not fit their declared type,
//! query streams, discovery, and plain errors for a missing or foreign file.

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use strata_lake::Lake;

use crate::rows;
use strata_project::{Redactor, load_source};
use strata_sources::ingest::{IngestOptions, StreamReport};

struct Db {
    conn: SqliteConnection,
    url: String,
    dir: tempfile::TempDir,
}

impl Db {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.db");
        let conn = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        Self {
            conn,
            url: format!("sqlite://{}", path.display()),
            dir,
        }
    }

    async fn exec(&mut self, sql: &str) {
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(&mut self.conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn lake(&self) -> Lake {
        crate::lake_in(self.dir.path()).await
    }

    fn source(&self, streams: &str) -> strata_project::SourceDef {
        let p = self.dir.path().join("app.yml");
        std::fs::write(
            &p,
            format!("type: sqlite\nurl: {}\nstreams:\n{streams}", self.url),
        )
        .unwrap();
        load_source(&p, &Redactor::new()).unwrap()
    }

    async fn load(&self, lake: &Lake, streams: &str) -> Vec<StreamReport> {
        self.try_load(lake, streams)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn try_load(
        &self,
        lake: &Lake,
        streams: &str,
    ) -> Result<Vec<StreamReport>, strata_sources::Error> {
        crate::ingest_all(lake, &self.source(streams), &IngestOptions::default()).await
    }
}

async fn schema_of(lake: &Lake, table: &str) -> String {
    let info = lake.table_info(&table.parse().unwrap()).await.unwrap();
    info.schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_types_nulls_and_incremental_ties() {
    let mut db = Db::new().await;
    db.exec(
        "CREATE TABLE all_types (
           id INTEGER PRIMARY KEY, big BIGINT, r REAL, d DOUBLE, amount DECIMAL(12,2), n NUMERIC,
           flag BOOLEAN, day DATE, at DATETIME, ts TIMESTAMP, name VARCHAR(20), body TEXT, c CHAR(3),
           doc JSON, data BLOB, anything, updated_at DATETIME NOT NULL);
         INSERT INTO all_types VALUES
           (1, 9223372036854775807, 1.5, -2.25, 1234567890.12, 42, 1, '2024-02-29',
            '2024-02-29 13:45:01.123456', 1709214301, 'héllo', 'long text', 'abc', '{\"a\": 1}',
            X'00FF', 7, '2024-01-01 00:00:00'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, '2024-01-01T00:00:00');",
    )
    .await;
    let lake = db.lake().await;
    let stream = "  - table: all_types\n    mode: incremental\n    cursor: updated_at\n    primary_key: [id]\n";
    let r = db.load(&lake, stream).await;
    assert_eq!(r[0].rows, 2);
    assert_eq!(r[0].cursor.as_deref(), Some("2024-01-01T00:00:00"));
    assert_eq!(
        schema_of(&lake, "raw.app_all_types").await,
        "id:Int64 big:Int64 r:Float64 d:Float64 amount:Decimal128(12, 2) n:Utf8 flag:Boolean \
         day:Date32 at:Timestamp(µs) ts:Timestamp(µs) name:Utf8 body:Utf8 c:Utf8 doc:Utf8 \
         data:Binary anything:Int64 updated_at:Timestamp(µs)"
    );
    let got = rows(&lake, "raw.app_all_types", "*").await;
    assert_eq!(
        got,
        vec![
            "1|9223372036854775807|1.5|-2.25|1234567890.12|42|true|2024-02-29|2024-02-29T13:45:01.123456\
             |2024-02-29T13:45:01|héllo|long text|abc|{\"a\": 1}|00ff|7|2024-01-01T00:00:00"
                .to_string(),
            "2|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|2024-01-01T00:00:00"
                .to_string(),
        ]
    );

    // Between runs: a new row tied at the last cursor (written with a space, the cursor
    // has a `T`), and an update written as RFC 3339 with `Z`. Both are read, ties merged.
    db.exec(
        "INSERT INTO all_types (id, name, updated_at) VALUES (3, 'tie', '2024-01-01 00:00:00');
         UPDATE all_types SET name = 'changed', updated_at = '2024-06-01T00:00:00Z' WHERE id = 1;",
    )
    .await;
    let r = db.load(&lake, stream).await;
    assert_eq!(r[0].rows, 3, "rows 2 and 3 (tied) and 1 (updated)");
    assert_eq!(r[0].cursor.as_deref(), Some("2024-06-01T00:00:00"));
    assert_eq!(
        rows(&lake, "raw.app_all_types", "id, name, updated_at").await,
        vec![
            "1|changed|2024-06-01T00:00:00",
            "2|NULL|2024-01-01T00:00:00",
            "3|tie|2024-01-01T00:00:00"
        ]
    );

    // Nothing new: only the row at the cursor is read again, and nothing is duplicated.
    let r = db.load(&lake, stream).await;
    assert_eq!(r[0].rows, 1);
    assert_eq!(
        rows(&lake, "raw.app_all_types", "count(*)").await,
        vec!["3"]
    );

    // Discovery: tables, declared types, primary keys, and the type of an untyped column.
    db.exec(
        "CREATE TABLE lines (order_id INTEGER, line INTEGER, sku TEXT, PRIMARY KEY (order_id, line));",
    )
    .await;
    let def = db.source(stream);
    let found = strata_sources::connect(&def)
        .unwrap()
        .discover()
        .await
        .unwrap();
    let tables: Vec<&str> = found.iter().map(|d| d.table.as_str()).collect();
    assert_eq!(tables, ["main.all_types", "main.lines"]);
    assert_eq!(found[0].primary_key, ["id"]);
    assert_eq!(found[1].primary_key, ["order_id", "line"]);
    let anything = found[0].schema.index_of("anything").unwrap();
    assert_eq!(
        found[0].schema.field(anything).data_type(),
        &arrow::datatypes::DataType::Int64
    );
    assert_eq!(found[0].source_types[anything], "(none)");
    assert_eq!(found[0].source_types[4], "DECIMAL(12,2)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_mistyped_values_are_rejected_not_nulled() {
    let mut db = Db::new().await;
    db.exec(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, age INTEGER, born DATE, name TEXT, score DECIMAL(5,2));
         INSERT INTO people VALUES (1, 30, '1990-01-01', 'ann', 12.5);
         INSERT INTO people VALUES (2, 'abc', '1990-01-01', 'bob', 1);
         INSERT INTO people VALUES (3, 40, 'not a date', 'cy', 2);
         INSERT INTO people VALUES (4, 50, NULL, 'di', 1.234);
         INSERT INTO people VALUES (5, 60, '2000-02-29', NULL, NULL);",
    )
    .await;
    let lake = db.lake().await;
    let r = db.load(&lake, "  - table: people\n").await;
    assert_eq!(r[0].rows, 2);
    assert_eq!(r[0].rejected, 3);
    assert_eq!(
        rows(&lake, "raw.app_people", "*").await,
        vec!["1|30|1990-01-01|ann|12.50", "5|60|2000-02-29|NULL|NULL"]
    );
    let rejected = rows(
        &lake,
        "raw.app_people__rejected",
        "line, location, reason, raw",
    )
    .await;
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(
        rejected[0].starts_with("2|") && rejected[0].contains("table `people`, rowid"),
        "{rejected:?}"
    );
    assert!(
        rejected[0].contains("column `age` (INTEGER): text 'abc' is not an integer"),
        "{rejected:?}"
    );
    assert!(rejected[0].contains("\"age\":\"abc\""), "{rejected:?}");
    assert!(
        rejected[1].starts_with("3|") && rejected[1].contains("column `born` (DATE)"),
        "{rejected:?}"
    );
    assert!(
        rejected[2].starts_with("4|") && rejected[2].contains("more than 2 decimal digits"),
        "{rejected:?}"
    );

    // With `on_bad_rows: fail` the stream stops before anything is committed.
    let err = db
        .try_load(
            &lake,
            "  - table: people\n    destination: raw.people_strict\n    on_bad_rows: fail\n",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 row(s) could not be read"), "{err}");
    assert!(err.contains("rowid:2"), "{err}");
    assert!(
        !lake
            .table_exists(&"raw.people_strict".parse().unwrap())
            .await
            .unwrap()
    );

    // A query stream: declared types follow the table's columns, expressions are typed by
    // their values; the filter and the column selection apply.
    let r = db
        .load(
            &lake,
            "  - name: adults\n    query: SELECT id, name, age * 2 AS twice, born FROM people WHERE typeof(age) = 'integer'\n    filter: id <> 3\n    exclude: [born]\n",
        )
        .await;
    assert_eq!(r[0].rows, 3);
    assert_eq!(
        schema_of(&lake, "raw.app_adults").await,
        "id:Int64 name:Utf8 twice:Int64"
    );
    assert_eq!(
        rows(&lake, "raw.app_adults", "*").await,
        vec!["1|ann|60", "4|di|100", "5|NULL|120"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_check_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let check = |url: String| {
        let p = dir.path().join("app.yml");
        std::fs::write(&p, format!("type: sqlite\nurl: {url}\n")).unwrap();
        let def = load_source(&p, &Redactor::new()).unwrap();
        async move {
            strata_sources::connect(&def)
                .unwrap()
                .check()
                .await
                .map_err(|e| e.to_string())
        }
    };
    let missing = dir.path().join("nope.db");
    let err = check(format!("sqlite://{}", missing.display()))
        .await
        .unwrap_err();
    assert!(
        err.contains(&format!("the file {} does not exist", missing.display())),
        "{err}"
    );
    assert!(err.starts_with("source `app`"), "{err}");

    let text = dir.path().join("notes.db");
    std::fs::write(
        &text,
        "these are notes, not a database, padded to look like a page ".repeat(20),
    )
    .unwrap();
    let err = check(format!("sqlite://{}", text.display()))
        .await
        .unwrap_err();
    assert!(err.contains("is not a SQLite database"), "{err}");

    let err = check("sqlite://relative/nope.db".into()).await.unwrap_err();
    assert!(
        err.contains(
            "relative/nope.db does not exist (a relative `url:` is read from the project's folder)"
        ),
        "{err}"
    );

    // A real file passes, and it is not modified by reading.
    let good = dir.path().join("good.db");
    let mut conn = SqliteConnectOptions::new()
        .filename(&good)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE t (x INTEGER)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let before = std::fs::read(&good).unwrap();
    check(format!("sqlite://{}", good.display())).await.unwrap();
    assert_eq!(std::fs::read(&good).unwrap(), before);
}
