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
        err.contains("new column `price`") && err.contains("nothing was written"),
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
    ingest(
        &env,
        &source(&env, &yml("evolve")),
        IngestOptions::default(),
    )
    .await;
    let got = rows(&env.lake, "raw.shop_items", "id, name, price").await;
    assert!(got.contains(&"3|NULL|1.00".to_string()), "{got:?}");
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
