//! PostgreSQL: type mapping, sync modes, state, schema changes and connection errors,
//! against the real server (`STRATA_IT_POSTGRES`, set by scripts/test.sh).

use std::sync::Arc;

use strata_lake::Lake;

use crate::rows;
use strata_project::{Redactor, SourceDef, load_source};
use strata_sources::ingest::{IngestOptions, Progress, run_stream};
use tokio_postgres::NoTls;

struct Pg {
    client: tokio_postgres::Client,
    url: String,
    schema: String,
}

impl Pg {
    async fn new(test: &str) -> Option<Self> {
        let Ok(base) = std::env::var("STRATA_IT_POSTGRES") else {
            eprintln!("SKIP {test}: STRATA_IT_POSTGRES is not set");
            return None;
        };
        let (client, conn) = tokio_postgres::connect(&base, NoTls)
            .await
            .expect("PostgreSQL is reachable");
        tokio::spawn(conn);
        let schema = format!("src_it_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        Some(Self {
            client,
            url: base,
            schema,
        })
    }

    async fn exec(&self, sql: &str) {
        let sql = sql.replace("{s}", &self.schema);
        self.client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    async fn drop(self) {
        let _ = self
            .client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await;
    }
}

struct Env {
    _tmp: tempfile::TempDir,
    lake: Lake,
    dir: std::path::PathBuf,
}

async fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(tmp.path().join("lake")).unwrap();
    let lake = Lake::open(&url, Default::default()).await.unwrap();
    let dir = tmp.path().to_path_buf();
    Env {
        _tmp: tmp,
        lake,
        dir,
    }
}

fn source(env: &Env, yml: &str) -> SourceDef {
    let p = env.dir.join("shop.yml");
    std::fs::write(&p, yml).unwrap();
    load_source(&p, &Redactor::new()).unwrap()
}

async fn ingest(
    env: &Env,
    def: &SourceDef,
    opts: IngestOptions,
) -> Vec<strata_sources::ingest::StreamReport> {
    let src = strata_sources::connect(def).unwrap();
    let mut out = Vec::new();
    for s in &def.streams {
        out.push(
            run_stream(
                &env.lake,
                src.as_ref(),
                def,
                s,
                &opts,
                Arc::new(Progress::default()),
            )
            .await
            .unwrap_or_else(|e| panic!("stream {}: {e}", s.name)),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_common_type_maps_without_loss() {
    let Some(pg) = Pg::new("every_common_type_maps_without_loss").await else {
        return;
    };
    pg.exec(
        "CREATE TYPE {s}.mood AS ENUM ('sad', 'happy');
         CREATE TABLE {s}.all_types (
           id int PRIMARY KEY, i2 smallint, i8 bigint, n numeric(12,2), n_free numeric, r real, d double precision,
           b boolean, t text, vc varchar(10), c char(3), dt date, tm time, ts timestamp, tstz timestamptz,
           iv interval, u uuid, j json, jb jsonb, by bytea, arr int[], tarr text[], e {s}.mood, m money);
         COMMENT ON COLUMN {s}.all_types.t IS 'free text';
         INSERT INTO {s}.all_types VALUES
           (1, -32768, 9223372036854775807, 1234567890.12, 3.14159265358979323846264338327950288, 1.5, -2.25,
            true, 'héllo', 'short', 'ab', '2024-02-29', '13:45:01.5', '2024-02-29 13:45:01.123456',
            '2024-02-29 13:45:01.123456+02', '1 year 2 mons 3 days 04:05:06.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
            '{\"a\": [1, 2]}', '{\"b\": null}', '\\x00ff', '{1,NULL,3}', '{x,y}', 'happy', 12.34),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL),
           (3, 0, 0, -0.01, 0, 0, 0, false, '', '', '', '1970-01-01', '00:00', '1999-12-31 23:59:59',
            '2000-01-01 00:00:00+00', '-1 day', '00000000-0000-0000-0000-000000000000', 'null', '[]', '\\x',
            '{}', '{}', 'sad', -1);",
    )
    .await;
    let env = env().await;
    let def = source(
        &env,
        &format!(
            "type: postgres\nurl: {}\nstreams:\n  - table: {}.all_types\n",
            pg.url, pg.schema
        ),
    );
    let report = ingest(&env, &def, IngestOptions::default()).await;
    assert_eq!(report[0].rows, 3);
    let info = env
        .lake
        .table_info(&"raw.shop_all_types".parse().unwrap())
        .await
        .unwrap();
    let types: Vec<String> = info
        .schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    assert_eq!(
        types.join(" "),
        "id:Int32 i2:Int16 i8:Int64 n:Decimal128(12, 2) n_free:Utf8 r:Float32 d:Float64 b:Boolean \
         t:Utf8 vc:Utf8 c:Utf8 dt:Date32 tm:Utf8 ts:Timestamp(µs) tstz:Timestamp(µs, \"UTC\") \
         iv:Utf8 u:Utf8 j:Utf8 jb:Utf8 by:Binary arr:List(Int32) tarr:List(Utf8) e:Utf8 m:Utf8"
            .replace(
                "List(Int32)",
                &info
                    .schema
                    .field_with_name("arr")
                    .unwrap()
                    .data_type()
                    .to_string()
            )
            .replace(
                "List(Utf8)",
                &info
                    .schema
                    .field_with_name("tarr")
                    .unwrap()
                    .data_type()
                    .to_string()
            )
    );
    let all = rows(&env.lake, "raw.shop_all_types", "*").await;
    assert_eq!(
        all[0],
        "1|-32768|9223372036854775807|1234567890.12|3.14159265358979323846264338327950288|1.5|-2.25|true|héllo|short|ab \
         |2024-02-29|13:45:01.5|2024-02-29T13:45:01.123456|2024-02-29T11:45:01.123456Z|1 year 2 mons 3 days 04:05:06.5\
         |a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|{\"a\": [1, 2]}|{\"b\": null}|00ff|[1, NULL, 3]|[x, y]|happy|$12.34",
        "all columns of row 1"
    );
    assert!(all[1].starts_with("2|NULL|NULL|NULL"), "{}", all[1]);
    assert_eq!(all[1].matches("NULL").count(), 23, "{}", all[1]);
    assert!(
        all[2].starts_with("3|0|0|-0.01|0|0.0|0.0|false||"),
        "{}",
        all[2]
    );
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_merges_on_key_and_never_skips_tied_cursors() {
    let Some(pg) = Pg::new("incremental").await else {
        return;
    };
    pg.exec(
        "CREATE TABLE {s}.orders (id int PRIMARY KEY, status text, updated_at timestamptz NOT NULL);
         INSERT INTO {s}.orders SELECT g, 'new', '2024-01-01 00:00:00+00'::timestamptz + (g % 3) * interval '1 hour'
           FROM generate_series(1, 1000) g;",
    )
    .await;
    let env = env().await;
    let def = source(
        &env,
        &format!(
            "type: postgres\nurl: {}\nstreams:\n  - table: {}.orders\n    mode: incremental\n    cursor: updated_at\n    primary_key: [id]\n",
            pg.url, pg.schema
        ),
    );
    let r = ingest(&env, &def, IngestOptions::default()).await;
    assert_eq!(r[0].rows, 1000);
    assert_eq!(r[0].cursor.as_deref(), Some("2024-01-01T02:00:00Z"));

    // Rows arrive with the SAME cursor value as the last one loaded (the tie Airbyte lost),
    // others are updated, one moves forward.
    pg.exec(
        "INSERT INTO {s}.orders VALUES (1001, 'late', '2024-01-01 02:00:00+00'), (1002, 'later', '2024-01-01 03:00:00+00');
         UPDATE {s}.orders SET status = 'paid', updated_at = '2024-01-01 03:00:00+00' WHERE id IN (1, 2);",
    )
    .await;
    let r = ingest(&env, &def, IngestOptions::default()).await;
    // Re-read: the rows tied at 02:00 (332 left there + 1 new) and the 3 rows at 03:00.
    assert_eq!(r[0].rows, 336);
    let got = rows(
        &env.lake,
        "raw.shop_orders",
        "count(*), count(DISTINCT id), sum(CASE WHEN status = 'paid' THEN 1 ELSE 0 END)",
    )
    .await;
    assert_eq!(got, vec!["1002|1002|2"]);

    // Nothing new: only the rows tied at the last cursor value are re-read, merged onto
    // themselves; the table's rows and the cursor stay as they were.
    let r = ingest(&env, &def, IngestOptions::default()).await;
    assert_eq!(r[0].rows, 3);
    assert_eq!(r[0].cursor.as_deref(), Some("2024-01-01T03:00:00Z"));
    let again = rows(
        &env.lake,
        "raw.shop_orders",
        "count(*), count(DISTINCT id), sum(CASE WHEN status = 'paid' THEN 1 ELSE 0 END)",
    )
    .await;
    assert_eq!(again, vec!["1002|1002|2"]);

    // State lives in the lake commit: a new process (here, a fresh lake handle) resumes.
    let state = strata_sources::ingest::load_state(&env.lake, "shop", &def.streams[0])
        .await
        .unwrap();
    assert_eq!(state.cursor.as_deref(), Some("2024-01-01T03:00:00Z"));
    assert_eq!(state.runs, 3);

    // --full-refresh reloads everything and replaces the table.
    pg.exec("DELETE FROM {s}.orders WHERE id > 10").await;
    let r = ingest(&env, &def, IngestOptions { full_refresh: true }).await;
    assert_eq!(r[0].rows, 10);
    assert_eq!(
        rows(&env.lake, "raw.shop_orders", "count(*)").await,
        vec!["10"]
    );
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refresh_append_columns_filter_and_soft_deletes() {
    let Some(pg) = Pg::new("modes").await else {
        return;
    };
    pg.exec(
        "CREATE TABLE {s}.customers (id int PRIMARY KEY, email text, secret text, region text, deleted boolean DEFAULT false, v int DEFAULT 0);
         INSERT INTO {s}.customers (id, email, secret, region) VALUES (1, 'a@x.com', 's1', 'south'), (2, 'b@x.com', 's2', 'north'), (3, 'c@x.com', 's3', 'south');",
    )
    .await;
    let env = env().await;
    let def = source(
        &env,
        &format!(
            "type: postgres\nurl: {url}\nstreams:\n  - table: {s}.customers\n    exclude: [secret]\n    filter: \"region = 'south'\"\n  - name: log\n    query: select id, region from {s}.customers\n    mode: append\n  - name: live\n    table: {s}.customers\n    columns: [id, email, deleted, v]\n    mode: incremental\n    cursor: v\n    primary_key: [id]\n    deleted_flag: deleted\n",
            url = pg.url,
            s = pg.schema
        ),
    );
    ingest(&env, &def, IngestOptions::default()).await;
    assert_eq!(
        rows(&env.lake, "raw.shop_customers", "*").await,
        vec!["1|a@x.com|south|false|0", "3|c@x.com|south|false|0"]
    );
    ingest(&env, &def, IngestOptions::default()).await;
    // full refresh replaced; append added the same rows again.
    assert_eq!(
        rows(&env.lake, "raw.shop_customers", "count(*)").await,
        vec!["2"]
    );
    assert_eq!(rows(&env.lake, "raw.shop_log", "count(*)").await, vec!["6"]);
    // A soft delete at the source removes the row from the incremental destination.
    pg.exec("UPDATE {s}.customers SET deleted = true, v = 1 WHERE id = 2")
        .await;
    ingest(&env, &def, IngestOptions::default()).await;
    assert_eq!(rows(&env.lake, "raw.shop_live", "id").await, vec!["1", "3"]);
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_follow_the_policy() {
    let Some(pg) = Pg::new("schema_changes").await else {
        return;
    };
    pg.exec("CREATE TABLE {s}.items (id int PRIMARY KEY, name text); INSERT INTO {s}.items VALUES (1, 'a');").await;
    let env = env().await;
    let yml = |policy: &str| {
        format!(
            "type: postgres\nurl: {}\nstreams:\n  - table: {}.items\n    mode: append\n    on_schema_change: {policy}\n",
            pg.url, pg.schema
        )
    };
    ingest(
        &env,
        &source(&env, &yml("evolve")),
        IngestOptions::default(),
    )
    .await;
    pg.exec("ALTER TABLE {s}.items ADD COLUMN price numeric(8,2); INSERT INTO {s}.items VALUES (2, 'b', 9.99);").await;

    // fail: nothing written, a clear message.
    let def = source(&env, &yml("fail"));
    let src = strata_sources::connect(&def).unwrap();
    let err = run_stream(
        &env.lake,
        src.as_ref(),
        &def,
        &def.streams[0],
        &IngestOptions::default(),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`price` added (Decimal128(8, 2))") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(
        rows(&env.lake, "raw.shop_items", "count(*)").await,
        vec!["1"]
    );

    // evolve: the column is added, old rows read NULL.
    let r = ingest(
        &env,
        &source(&env, &yml("evolve")),
        IngestOptions::default(),
    )
    .await;
    assert_eq!(r[0].added_columns, vec!["price".to_string()]);
    assert_eq!(
        rows(&env.lake, "raw.shop_items", "id, name, price").await,
        vec!["1|a|NULL", "1|a|NULL", "2|b|9.99"]
    );

    // A dropped source column is kept in the table and filled with NULL.
    pg.exec("ALTER TABLE {s}.items DROP COLUMN name; INSERT INTO {s}.items VALUES (3, 1.00);")
        .await;
    let r = ingest(
        &env,
        &source(&env, &yml("evolve")),
        IngestOptions::default(),
    )
    .await;
    assert_eq!(
        r[0].schema_changes
            .iter()
            .map(strata_sources::ingest::SchemaChange::summary)
            .collect::<Vec<_>>(),
        ["`name` removed: kept (NULL from now on)"]
    );
    let got = rows(&env.lake, "raw.shop_items", "id, name, price").await;
    assert!(got.contains(&"3|NULL|1.00".to_string()), "{got:?}");

    // A safe widening rewrites the column's type; an incompatible change under `evolve`
    // turns the column to text, every old value kept as its text form.
    pg.exec("ALTER TABLE {s}.items ALTER COLUMN id TYPE bigint; ALTER TABLE {s}.items ALTER COLUMN price TYPE text; INSERT INTO {s}.items VALUES (5000000000, 'n/a');")
        .await;
    let r = ingest(
        &env,
        &source(&env, &yml("evolve")),
        IngestOptions::default(),
    )
    .await;
    assert_eq!(
        r[0].schema_changes
            .iter()
            .map(strata_sources::ingest::SchemaChange::summary)
            .collect::<Vec<_>>(),
        [
            "`id` widened from Int32 to Int64: applied",
            "`price` incompatible from Decimal128(8, 2) to Utf8: retyped to text",
        ]
    );
    let info = env
        .lake
        .table_info(&"raw.shop_items".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        info.schema.field_with_name("id").unwrap().data_type(),
        &arrow::datatypes::DataType::Int64
    );
    let got = rows(&env.lake, "raw.shop_items", "id, price").await;
    assert!(
        got.contains(&"2|9.99".to_string()) && got.contains(&"5000000000|n/a".to_string()),
        "{got:?}"
    );
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_type_change_goes_to_quarantine() {
    let Some(pg) = Pg::new("quarantine").await else {
        return;
    };
    pg.exec("CREATE TABLE {s}.m (id int PRIMARY KEY, v int); INSERT INTO {s}.m VALUES (1, 10);")
        .await;
    let env = env().await;
    let yml = format!(
        "type: postgres\nurl: {}\nstreams:\n  - table: {}.m\n    mode: append\n    on_schema_change: quarantine\n",
        pg.url, pg.schema
    );
    ingest(&env, &source(&env, &yml), IngestOptions::default()).await;
    pg.exec("ALTER TABLE {s}.m ALTER COLUMN v TYPE text USING v::text; INSERT INTO {s}.m VALUES (2, 'twenty');").await;
    let r = ingest(&env, &source(&env, &yml), IngestOptions::default()).await;
    assert_eq!(r[0].destination.to_string(), "raw.shop_m__quarantine");
    // The main table is untouched; the incompatible rows wait in quarantine.
    assert_eq!(rows(&env.lake, "raw.shop_m", "id, v").await, vec!["1|10"]);
    assert_eq!(
        rows(&env.lake, "raw.shop_m__quarantine", "id, v").await,
        vec!["1|10", "2|twenty"]
    );
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_discover_explain_themselves() {
    let Some(pg) = Pg::new("check").await else {
        return;
    };
    pg.exec("CREATE TABLE {s}.a (id int PRIMARY KEY, x text); CREATE TABLE {s}.b (k1 int, k2 int, PRIMARY KEY (k2, k1));").await;
    let env = env().await;
    let good = source(
        &env,
        &format!(
            "type: postgres\nurl: {}\nschemas: [{}]\n",
            pg.url, pg.schema
        ),
    );
    let src = strata_sources::connect(&good).unwrap();
    src.check().await.unwrap();
    let found = src.discover().await.unwrap();
    let names: Vec<_> = found
        .iter()
        .map(|d| (d.table.clone(), d.primary_key.clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            (format!("{}.a", pg.schema), vec!["id".to_string()]),
            (
                format!("{}.b", pg.schema),
                vec!["k2".to_string(), "k1".to_string()]
            ),
        ]
    );

    for (url, expect) in [
        ("postgres://postgres@127.0.0.1:1/test", "unreachable"),
        (
            "postgres://postgres@127.0.0.1:5432/no_such_db_strata",
            "database does not exist",
        ),
    ] {
        let def = source(&env, &format!("type: postgres\nurl: {url}\n"));
        let err = strata_sources::connect(&def)
            .unwrap()
            .check()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source `shop`") && err.contains(expect),
            "{err}"
        );
    }
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out() {
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let env = env().await;
    let def = source(
        &env,
        &format!(
            "type: postgres\nurl: postgres://u:secret@127.0.0.1:{port}/db?connect_timeout=1\n"
        ),
    );
    let started = std::time::Instant::now();
    let err = strata_sources::connect(&def)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("the server did not answer within 1s") && !text.contains("secret"),
        "{text}"
    );
    assert!(strata_types::Classify::retryable(&err));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_without_a_key_neither_skips_nor_duplicates_tied_rows() {
    let Some(pg) = Pg::new("nokey").await else {
        return;
    };
    pg.exec("CREATE TABLE {s}.events (at int NOT NULL, kind text); INSERT INTO {s}.events VALUES (1, 'a'), (2, 'b'), (2, 'b'), (2, 'c');").await;
    let env = env().await;
    let def = source(
        &env,
        &format!(
            "type: postgres\nurl: {}\nstreams:\n  - table: {}.events\n    mode: incremental\n    cursor: at\n",
            pg.url, pg.schema
        ),
    );
    let r = ingest(&env, &def, IngestOptions::default()).await;
    assert_eq!(r[0].rows, 4);
    // Rows arrive late at the last value, one identical to two already loaded.
    pg.exec("INSERT INTO {s}.events VALUES (2, 'b'), (2, 'd'), (3, 'e');")
        .await;
    let r = ingest(&env, &def, IngestOptions::default()).await;
    assert_eq!(r[0].rows, 3);
    // Nothing new: the rows at the last value are read again and all dropped.
    let r = ingest(&env, &def, IngestOptions::default()).await;
    assert_eq!(r[0].rows, 0);
    assert_eq!(
        rows(&env.lake, "raw.shop_events", "at, kind").await.len(),
        7
    );
    let mut got = rows(&env.lake, "raw.shop_events", "at, kind").await;
    got.sort();
    assert_eq!(got, ["1|a", "2|b", "2|b", "2|b", "2|c", "2|d", "3|e"]);
    pg.drop().await;
}

/// `count(*)|count(DISTINCT k)|sum(k)|sum(v)` of a PostgreSQL table, formatted as
/// [`rows`] formats the lake's.
async fn pg_checksum(pg: &Pg, table: &str, k: &str, v: &str) -> String {
    let sql = format!(
        "SELECT count(*)::text, count(DISTINCT {k})::text, coalesce(sum({k})::text, 'NULL'), coalesce(sum({v})::text, 'NULL') FROM {}.{table}",
        pg.schema
    );
    let r = pg.client.query_one(&sql, &[]).await.unwrap();
    (0..4)
        .map(|i| r.get::<_, String>(i))
        .collect::<Vec<_>>()
        .join("|")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_reads_return_every_row_exactly_once() {
    let Some(pg) = Pg::new("parallel_reads_return_every_row_exactly_once").await else {
        return;
    };
    pg.exec(
        "-- negative and positive keys with gaps
         CREATE TABLE {s}.gappy (id bigint PRIMARY KEY, v int NOT NULL, t text);
         INSERT INTO {s}.gappy SELECT g * 7 - 50000, g % 1000, repeat('x', g % 13)
           FROM generate_series(1, 20000) g WHERE g % 11 <> 0 AND g % 101 <> 0;
         -- fewer rows than connections, at the extremes of bigint
         CREATE TABLE {s}.tiny (id bigint PRIMARY KEY, v int NOT NULL);
         INSERT INTO {s}.tiny VALUES (-9223372036854775808, 1), (0, 2), (9223372036854775807, 3);
         CREATE TABLE {s}.empty (id int PRIMARY KEY, v int);
         -- no primary key: split on a nullable smallint column; NULLs come with the first range
         CREATE TABLE {s}.nopk (k smallint, v int NOT NULL);
         INSERT INTO {s}.nopk SELECT CASE WHEN g % 10 = 0 THEN NULL ELSE (g % 200 - 100) END, g
           FROM generate_series(1, 5000) g;",
    )
    .await;
    let env = env().await;
    let def = source(
        &env,
        &format!(
            "type: postgres\nurl: {url}\nstreams:
  - table: {s}.gappy
    options: {{parallel_reads: \"4\"}}
  - name: gappy_filtered
    table: {s}.gappy
    filter: \"v < 500\"
    mode: append
    options: {{parallel_reads: \"3\"}}
  - table: {s}.tiny
    options: {{parallel_reads: \"64\"}}
  - table: {s}.empty
    options: {{parallel_reads: \"4\"}}
  - table: {s}.nopk
    options: {{parallel_reads: \"5\", partition_column: k}}
",
            url = pg.url,
            s = pg.schema
        ),
    );
    let reports = ingest(&env, &def, IngestOptions::default()).await;
    let rows_read: Vec<u64> = reports.iter().map(|r| r.rows).collect();
    assert_eq!(rows_read[0], 20000 - 1818 - 198 + 18, "{rows_read:?}");

    let lake = |t: &'static str, k: &'static str, v: &'static str| {
        let lake = &env.lake;
        async move {
            rows(
                lake,
                t,
                &format!("count(*), count(DISTINCT {k}), sum({k}), sum({v})"),
            )
            .await
            .join("")
        }
    };
    assert_eq!(
        lake("raw.shop_gappy", "id", "v").await,
        pg_checksum(&pg, "gappy", "id", "v").await
    );
    let filtered = pg
        .client
        .query_one(
            &format!(
                "SELECT count(*)::text || '|' || count(DISTINCT id)::text || '|' || sum(id)::text || '|' || sum(v)::text FROM {}.gappy WHERE v < 500",
                pg.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(lake("raw.shop_gappy_filtered", "id", "v").await, filtered);
    assert_eq!(
        rows(&env.lake, "raw.shop_tiny", "id, v").await,
        vec!["-9223372036854775808|1", "0|2", "9223372036854775807|3"]
    );
    assert_eq!(
        rows(&env.lake, "raw.shop_empty", "count(*)").await,
        vec!["0"]
    );
    assert_eq!(
        lake("raw.shop_nopk", "k", "v").await,
        pg_checksum(&pg, "nopk", "k", "v").await
    );
    assert_eq!(
        rows(&env.lake, "raw.shop_nopk", "count(*), sum(v)").await,
        vec!["5000|12502500"],
        "rows whose partition column is NULL are read too"
    );
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_reads_share_one_snapshot_while_rows_change() {
    use arrow::array::{Array, Int32Array, Int64Array};
    use futures::StreamExt;
    use std::sync::atomic::{AtomicU64, Ordering};

    let Some(pg) = Pg::new("parallel_reads_share_one_snapshot").await else {
        return;
    };
    const N: i64 = 300_000;
    pg.exec(&format!(
        "CREATE TABLE {{s}}.accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO {{s}}.accounts SELECT g, 100 FROM generate_series(1, {N}) g;
         ANALYZE {{s}}.accounts;"
    ))
    .await;
    let env = env().await;
    let def = source(
        &env,
        &format!(
            "type: postgres\nurl: {}\nstreams:\n  - table: {}.accounts\n    options:\n      parallel_reads: \"4\"\n",
            pg.url, pg.schema
        ),
    );
    // Transfers between the first and the last range commit all the time: before the read
    // starts, while its connections open, and while its batches are consumed.
    let committed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mover = {
        let (client, conn) = tokio_postgres::connect(&pg.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        let schema = pg.schema.clone();
        let committed = Arc::clone(&committed);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut i: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let (from, to) = (1 + i % 1000, N - i % 1000);
                let (from, to) = if i % 2 == 0 { (from, to) } else { (to, from) };
                client
                    .batch_execute(&format!(
                        "UPDATE {schema}.accounts SET balance = balance + CASE id WHEN {from} THEN -7 ELSE 7 END WHERE id IN ({from}, {to})"
                    ))
                    .await
                    .unwrap();
                committed.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        })
    };
    while committed.load(Ordering::SeqCst) < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let src = strata_sources::connect(&def).unwrap();
    let (_, mut batches) = src
        .read(&def.streams[0], &strata_sources::ReadContext::default())
        .await
        .unwrap();

    // Four connections are copying this table at once (the channel is full, so they wait).
    let copying = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT % FROM \"{}\".\"accounts\"%'",
        pg.schema
    );
    let mut seen = 0;
    for _ in 0..100 {
        seen = pg
            .client
            .query_one(&copying, &[])
            .await
            .unwrap()
            .get::<_, i64>(0);
        if seen == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 4, "connections copying the table");

    // Each batch is taken only after at least one more transfer has committed.
    let (mut rows_seen, mut total) = (0i64, 0i64);
    let mut ids = std::collections::HashSet::new();
    loop {
        let before = committed.load(Ordering::SeqCst);
        while committed.load(Ordering::SeqCst) == before {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let Some(b) = batches.next().await else { break };
        let b = b.unwrap();
        let id = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
        let bal = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        for r in 0..b.num_rows() {
            assert!(ids.insert(id.value(r)), "id {} read twice", id.value(r));
            total += bal.value(r);
        }
        rows_seen += b.num_rows() as i64;
    }
    stop.store(true, Ordering::Relaxed);
    mover.await.unwrap();
    assert!(committed.load(Ordering::SeqCst) > 10);
    assert_eq!(rows_seen, N);
    assert_eq!(ids.len() as i64, N);
    assert_eq!(
        total,
        100 * N,
        "the sum of balances is one point-in-time image"
    );
    let after: i64 = pg
        .client
        .query_one(
            &format!("SELECT sum(balance)::int8 FROM {}.accounts", pg.schema),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, 100 * N);
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_read_options_explain_what_to_fix() {
    let Some(pg) = Pg::new("parallel_read_options").await else {
        return;
    };
    pg.exec(
        "CREATE TABLE {s}.codes (code text PRIMARY KEY, n int, label text);
         INSERT INTO {s}.codes VALUES ('a', 1, 'x');",
    )
    .await;
    let env = env().await;
    let cases = [
        (
            "table: {s}.codes\n    options: {parallel_reads: \"lots\"}",
            "option `parallel_reads` must be `auto` or a number of connections from 1 to 64, not `lots`",
        ),
        (
            "table: {s}.codes\n    options: {parallel_reads: \"4\"}",
            "set `partition_column` to an integer column",
        ),
        (
            "table: {s}.codes\n    options: {partition_column: label}",
            "`partition_column: label` must be a smallint, integer or bigint column",
        ),
        (
            "table: {s}.codes\n    options: {partition_column: nope}",
            "`partition_column: nope` is not a column of the table; columns are: code, n, label",
        ),
        (
            "name: q\n    query: select * from {s}.codes\n    options: {parallel_reads: \"2\"}",
            "a `query:` stream is read over one connection",
        ),
        (
            "table: {s}.codes\n    mode: incremental\n    cursor: n\n    primary_key: [code]\n    options: {parallel_reads: \"2\"}",
            "an incremental stream reads only new rows, over one connection",
        ),
    ];
    for (stream, expect) in cases {
        let def = source(
            &env,
            &format!(
                "type: postgres\nurl: {}\nstreams:\n  - {}\n",
                pg.url,
                stream.replace("{s}", &pg.schema)
            ),
        );
        let src = strata_sources::connect(&def).unwrap();
        let err = match src
            .read(&def.streams[0], &strata_sources::ReadContext::default())
            .await
        {
            Ok(_) => panic!("{stream}: the read started"),
            Err(e) => e.to_string(),
        };
        let name = &def.streams[0].name;
        assert!(
            err.contains("source `shop`")
                && err.contains(&format!("stream `{name}`"))
                && err.contains(expect),
            "{err}"
        );
    }
    // `partition_column` on an integer column works without a primary key, and one
    // connection (`parallel_reads: "1"`) is always allowed.
    let def = source(
        &env,
        &format!(
            "type: postgres\nurl: {url}\nstreams:\n  - table: {s}.codes\n    options: {{partition_column: n, parallel_reads: \"2\"}}\n  - name: one\n    table: {s}.codes\n    options: {{parallel_reads: \"1\"}}\n",
            url = pg.url,
            s = pg.schema
        ),
    );
    let r = ingest(&env, &def, IngestOptions::default()).await;
    assert_eq!((r[0].rows, r[1].rows), (1, 1));
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_encrypted_as_sslmode_says() {
    let Some(pg) = Pg::new("tls").await else {
        return;
    };
    let env = env().await;
    let with = |params: &str| {
        let sep = if pg.url.contains('?') { '&' } else { '?' };
        source(
            &env,
            &format!(
                "type: postgres\nurl: {}{sep}{params}\nstreams:\n  - name: session\n    query: SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false) AS ssl\n    destination: raw.tls_{}\n",
                pg.url,
                params
                    .split(['=', '&'])
                    .nth(1)
                    .unwrap_or("default")
                    .replace('-', "_")
            ),
        )
    };
    // The machine's server offers TLS with a self-signed certificate: `require` encrypts
    // without checking it (as libpq does); `disable` stays plain.
    for (params, table, want) in [
        ("sslmode=require", "raw.tls_require", "true"),
        ("sslmode=disable", "raw.tls_disable", "false"),
    ] {
        let def = with(params);
        ingest(&env, &def, IngestOptions::default()).await;
        assert_eq!(rows(&env.lake, table, "ssl").await, [want], "{params}");
    }
    // `verify-full` checks the certificate: a self-signed one is refused, in plain words.
    let err = strata_sources::connect(&with("sslmode=verify-full"))
        .unwrap()
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the server's TLS certificate is for another host name"),
        "{err}"
    );
    // Connected by the name the certificate was issued for, with its CA given, it passes.
    let by_name = pg.url.replace("127.0.0.1", "localhost");
    let sep = if by_name.contains('?') { '&' } else { '?' };
    let def = source(
        &env,
        &format!(
            "type: postgres\nurl: {by_name}{sep}sslmode=verify-full&sslrootcert=/etc/ssl/certs/ssl-cert-snakeoil.pem\nstreams:\n  - name: session\n    query: SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()\n    destination: raw.tls_verified\n"
        ),
    );
    if std::path::Path::new("/etc/ssl/certs/ssl-cert-snakeoil.pem").exists() {
        ingest(&env, &def, IngestOptions::default()).await;
        assert_eq!(rows(&env.lake, "raw.tls_verified", "ssl").await, ["true"]);
    }
    let err = strata_sources::connect(&with("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"))
        .unwrap()
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot read sslrootcert /nonexistent/ca.pem"),
        "{err}"
    );
    pg.drop().await;
}
