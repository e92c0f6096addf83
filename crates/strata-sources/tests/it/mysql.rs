//! MariaDB (the machine's server, `STRATA_IT_MYSQL`, set by scripts/test.sh): type mapping,
//! incremental merge with ties, errors. Each test uses its own database.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use strata_lake::Lake;

use crate::rows;
use strata_project::{Redactor, load_source};
use strata_sources::ingest::{IngestOptions, Progress, run_stream};

struct My {
    conn: mysql_async::Conn,
    base: String,
    db: String,
}

impl My {
    async fn new(test: &str) -> Option<Self> {
        let Ok(base) = std::env::var("STRATA_IT_MYSQL") else {
            eprintln!("SKIP {test}: STRATA_IT_MYSQL is not set");
            return None;
        };
        let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&base).unwrap())
            .await
            .expect("MariaDB is reachable");
        let db = format!("src_it_{}", uuid::Uuid::new_v4().simple());
        conn.query_drop(format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        conn.query_drop(format!("USE {db}")).await.unwrap();
        Some(Self { conn, base, db })
    }

    async fn exec(&mut self, sql: &str) {
        self.conn
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn url(&self) -> String {
        let root = self
            .base
            .rsplit_once('/')
            .map(|(r, _)| r)
            .unwrap_or(&self.base);
        format!("{root}/{}", self.db)
    }

    async fn drop(mut self) {
        let _ = self
            .conn
            .query_drop(format!("DROP DATABASE {}", self.db))
            .await;
    }
}

async fn load(
    yml: &str,
    lake: &Lake,
    dir: &std::path::Path,
    full: bool,
) -> Vec<strata_sources::ingest::StreamReport> {
    let p = dir.join("app.yml");
    std::fs::write(&p, yml).unwrap();
    let def = load_source(&p, &Redactor::new()).unwrap();
    let src = strata_sources::connect(&def).unwrap();
    let mut out = Vec::new();
    for s in &def.streams {
        out.push(
            run_stream(
                lake,
                src.as_ref(),
                &def,
                s,
                &IngestOptions { full_refresh: full },
                Arc::new(Progress::default()),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_types_and_incremental() {
    let Some(mut my) = My::new("mariadb_types_and_incremental").await else {
        return;
    };
    my.exec(
        "CREATE TABLE all_types (
           id INT PRIMARY KEY, flag TINYINT(1), t8 TINYINT, u8 TINYINT UNSIGNED, i16 SMALLINT, i24 MEDIUMINT,
           u32 INT UNSIGNED, big BIGINT, ubig BIGINT UNSIGNED, f FLOAT, d DOUBLE, dec12 DECIMAL(12,2),
           vc VARCHAR(20), txt TEXT, e ENUM('a','b'), j JSON, bin VARBINARY(8), blb BLOB, dt DATE, dtm DATETIME(6),
           ts TIMESTAMP(3) NULL, tm TIME, yr YEAR, b BIT(10), updated_at DATETIME(6) NOT NULL)",
    )
    .await;
    my.exec(
        "INSERT INTO all_types VALUES
         (1, 1, -128, 255, -32768, 8388607, 4294967295, -9223372036854775808, 18446744073709551615, 1.5, -2.25,
          1234567890.12, 'héllo', 'long text', 'b', '{\"a\": 1}', X'00FF', X'DEAD', '2024-02-29', '2024-02-29 13:45:01.123456',
          '2024-02-29 13:45:01.123', '13:45:01', 2024, b'1000000001', '2024-01-01 00:00:00'),
         (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
          NULL, NULL, NULL, NULL, NULL, NULL, '2024-01-01 00:00:00')",
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        &url::Url::from_directory_path(tmp.path().join("lake")).unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    let yml = format!(
        "type: mysql\nurl: {}\nstreams:\n  - table: all_types\n    mode: incremental\n    cursor: updated_at\n    primary_key: [id]\n",
        my.url()
    );
    let r = load(&yml, &lake, tmp.path(), false).await;
    assert_eq!(r[0].rows, 2);
    let info = lake
        .table_info(&"raw.app_all_types".parse().unwrap())
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
        "id:Int32 flag:Boolean t8:Int8 u8:Int16 i16:Int16 i24:Int32 u32:Int64 big:Int64 ubig:Decimal128(20, 0) \
         f:Float32 d:Float64 dec12:Decimal128(12, 2) vc:Utf8 txt:Utf8 e:Utf8 j:Utf8 bin:Binary blb:Binary dt:Date32 \
         dtm:Timestamp(µs) ts:Timestamp(µs, \"UTC\") tm:Utf8 yr:Int16 b:Int64 updated_at:Timestamp(µs)"
    );
    let got = rows(&lake, "raw.app_all_types", "*").await;
    assert_eq!(
        got[0],
        "1|true|-128|255|-32768|8388607|4294967295|-9223372036854775808|18446744073709551615|1.5|-2.25|1234567890.12\
         |héllo|long text|b|{\"a\": 1}|00ff|dead|2024-02-29|2024-02-29T13:45:01.123456|2024-02-29T13:45:01.123Z|13:45:01|2024|513|2024-01-01T00:00:00"
    );
    assert_eq!(got[1].matches("NULL").count(), 23, "{}", got[1]);

    // Incremental: a tie at the last cursor and an update are both picked up exactly once.
    my.exec(
        "INSERT INTO all_types (id, updated_at) VALUES (3, '2024-01-01 00:00:00');
         UPDATE all_types SET vc = 'changed', updated_at = '2024-06-01 00:00:00' WHERE id = 1",
    )
    .await;
    let r = load(&yml, &lake, tmp.path(), false).await;
    assert_eq!(r[0].rows, 3);
    assert_eq!(
        rows(&lake, "raw.app_all_types", "id, vc").await,
        vec!["1|changed", "2|NULL", "3|NULL"]
    );

    // Errors say what is wrong.
    let bad = format!(
        "type: mysql\nurl: {}\n",
        my.url().replace(&my.db, "no_such_db_strata")
    );
    let p = tmp.path().join("bad.yml");
    std::fs::write(&p, bad).unwrap();
    let def = load_source(&p, &Redactor::new()).unwrap();
    let err = strata_sources::connect(&def)
        .unwrap()
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("database does not exist"), "{err}");
    my.drop().await;
}
