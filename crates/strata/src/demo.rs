//! `strata demo`: a ready project for a fictional e-commerce company, "Lumen Goods".
//!
//! Data is generated deterministically (same `--scale`, same rows, on every machine) and
//! loaded into the `raw` namespace: customers, products, orders, order_items, payments.
//! A dbt project ([`DBT_PROJECT`], the files of `crates/strata/demo/`) models them into
//! staging views and mart tables, ending in an RFV segmentation of the customers.

use std::sync::Arc;

use anyhow::Result;
use strata_engine::datafusion::arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use strata_engine::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// SplitMix64: tiny, fast, and identical everywhere.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub(crate) fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Ana", "Bruno", "Carla", "Diego", "Elena", "Felipe", "Gabriela", "Hugo", "Isabel", "João",
    "Karin", "Lucas", "Marta", "Nuno", "Olivia", "Pedro", "Quinn", "Rita", "Sofia", "Tomás", "Uma",
    "Victor", "Wen", "Ximena", "Yara", "Zoe",
];
const LAST: &[&str] = &[
    "Silva", "Santos", "Oliveira", "Souza", "Lima", "Costa", "Pereira", "Almeida", "Nakamura",
    "Schmidt", "Rossi", "García", "Dubois", "Kowalski", "Okafor", "Chen",
];
const COUNTRIES: &[(&str, &str)] = &[
    ("BR", "south"),
    ("AR", "south"),
    ("CL", "south"),
    ("US", "north"),
    ("CA", "north"),
    ("MX", "north"),
    ("PT", "europe"),
    ("DE", "europe"),
    ("FR", "europe"),
];
const CATEGORIES: &[(&str, &[&str])] = &[
    (
        "Lamps",
        &["Desk Lamp", "Floor Lamp", "Reading Light", "Pendant"],
    ),
    (
        "Textiles",
        &["Linen Throw", "Wool Rug", "Cushion", "Curtain"],
    ),
    (
        "Kitchen",
        &["Ceramic Mug", "Chef Knife", "Cutting Board", "Teapot"],
    ),
    (
        "Office",
        &[
            "Notebook",
            "Fountain Pen",
            "Desk Organizer",
            "Monitor Stand",
        ],
    ),
    ("Garden", &["Planter", "Watering Can", "Seed Kit", "Pruner"]),
];
const ADJECTIVES: &[&str] = &["Classic", "Nordic", "Studio", "Mini", "Grand", "Eco", "Pro"];
const STATUSES: &[&str] = &[
    "completed",
    "completed",
    "completed",
    "completed",
    "shipped",
    "cancelled",
    "returned",
];
const METHODS: &[&str] = &["card", "card", "pix", "paypal", "bank_transfer"];

/// The generated tables.
pub(crate) struct DemoData {
    pub(crate) tables: Vec<(&'static str, Vec<RecordBatch>)>,
}

impl DemoData {
    pub(crate) fn rows(&self) -> u64 {
        self.tables
            .iter()
            .flat_map(|(_, b)| b.iter())
            .map(|b| b.num_rows() as u64)
            .sum()
    }
}

fn money() -> DataType {
    DataType::Decimal128(12, 2)
}

/// Days since 1970-01-01 of 2024-01-01; orders span two years from there.
const START_DAY: i32 = 19_723;
const SPAN_DAYS: u64 = 730;
const BATCH: usize = 65_536;

/// Generates the demo data for `orders` orders.
pub(crate) fn generate(orders: u64) -> Result<DemoData> {
    let customers = (orders / 5).max(50);
    let mut rng = Rng::new(0x05EE_D0F5_7A7A);
    let mut tables = Vec::new();

    // customers
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("signup_date", DataType::Date32, false),
    ]));
    let mut batches = Vec::new();
    let mut signup = Vec::with_capacity(customers as usize);
    let mut id = 1i64;
    while id <= customers as i64 {
        let n = BATCH.min((customers as i64 - id + 1) as usize);
        let (mut c_id, mut name, mut email, mut country, mut region, mut date) = (
            Int64Builder::with_capacity(n),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            Date32Builder::with_capacity(n),
        );
        for _ in 0..n {
            let f = rng.pick(FIRST);
            let l = rng.pick(LAST);
            let (ctry, reg) = *rng.pick(COUNTRIES);
            let d = START_DAY - 365 + rng.below(SPAN_DAYS) as i32;
            c_id.append_value(id);
            name.append_value(format!("{f} {l}"));
            email.append_value(format!(
                "{}.{}{}@example.com",
                ascii_lower(f),
                ascii_lower(l),
                id
            ));
            country.append_value(ctry);
            region.append_value(reg);
            date.append_value(d);
            signup.push(d);
            id += 1;
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(c_id.finish()),
            Arc::new(name.finish()),
            Arc::new(email.finish()),
            Arc::new(country.finish()),
            Arc::new(region.finish()),
            Arc::new(date.finish()),
        ];
        batches.push(RecordBatch::try_new(Arc::clone(&schema), cols)?);
    }
    tables.push(("customers", batches));

    // products
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("product_id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("price", money(), false),
    ]));
    let (mut p_id, mut p_name, mut p_cat, mut p_price) = (
        Int64Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        Decimal128Builder::new().with_data_type(money()),
    );
    let mut prices = Vec::new();
    let mut pid = 1i64;
    for (cat, items) in CATEGORIES {
        for item in *items {
            for adj in ADJECTIVES {
                let cents = 499 + rng.below(24_500) as i128;
                p_id.append_value(pid);
                p_name.append_value(format!("{adj} {item}"));
                p_cat.append_value(*cat);
                p_price.append_value(cents);
                prices.push(cents);
                pid += 1;
            }
        }
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(p_id.finish()),
        Arc::new(p_name.finish()),
        Arc::new(p_cat.finish()),
        Arc::new(p_price.finish()),
    ];
    tables.push(("products", vec![RecordBatch::try_new(schema, cols)?]));
    let products = prices.len() as u64;

    // orders, order_items, payments
    let o_schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new(
            "ordered_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("status", DataType::Utf8, false),
    ]));
    let i_schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("line_no", DataType::Int32, false),
        Field::new("product_id", DataType::Int64, false),
        Field::new("quantity", DataType::Int32, false),
        Field::new("unit_price", money(), false),
    ]));
    let p_schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("payment_id", DataType::Int64, false),
        Field::new("order_id", DataType::Int64, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("amount", money(), false),
        Field::new(
            "paid_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let (mut ob, mut ib, mut pb) = (Vec::new(), Vec::new(), Vec::new());
    let mut order_id = 1i64;
    let mut payment_id = 1i64;
    while order_id <= orders as i64 {
        let n = BATCH.min((orders as i64 - order_id + 1) as usize);
        let (mut o_id, mut o_cust, mut o_ts, mut o_status) = (
            Int64Builder::with_capacity(n),
            Int64Builder::with_capacity(n),
            TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            StringBuilder::new(),
        );
        let (mut i_order, mut i_line, mut i_prod, mut i_qty, mut i_price) = (
            Int64Builder::new(),
            Int32Builder::new(),
            Int64Builder::new(),
            Int32Builder::new(),
            Decimal128Builder::new().with_data_type(money()),
        );
        let (mut pay_id, mut pay_order, mut pay_method, mut pay_amount, mut pay_ts) = (
            Int64Builder::new(),
            Int64Builder::new(),
            StringBuilder::new(),
            Decimal128Builder::new().with_data_type(money()),
            TimestampMicrosecondBuilder::new().with_timezone("UTC"),
        );
        for _ in 0..n {
            let cust = 1 + rng.below(customers) as i64;
            let earliest = signup[(cust - 1) as usize].max(START_DAY);
            let day = earliest
                + rng.below((START_DAY + SPAN_DAYS as i32 - earliest).max(1) as u64) as i32;
            let micros = (day as i64 * 86_400 + rng.below(86_400) as i64) * 1_000_000;
            let status = *rng.pick(STATUSES);
            o_id.append_value(order_id);
            o_cust.append_value(cust);
            o_ts.append_value(micros);
            o_status.append_value(status);
            let lines = 1 + rng.below(4) as i32;
            let mut total: i128 = 0;
            for line in 1..=lines {
                // A few products sell much more than others.
                let p = if rng.below(3) == 0 {
                    rng.below(10)
                } else {
                    rng.below(products)
                };
                let qty = 1 + rng.below(3) as i32;
                let price = prices[p as usize];
                i_order.append_value(order_id);
                i_line.append_value(line);
                i_prod.append_value(p as i64 + 1);
                i_qty.append_value(qty);
                i_price.append_value(price);
                total += price * qty as i128;
            }
            if status != "cancelled" {
                pay_id.append_value(payment_id);
                pay_order.append_value(order_id);
                pay_method.append_value(*rng.pick(METHODS));
                pay_amount.append_value(total);
                pay_ts.append_value(micros + rng.below(3_600) as i64 * 1_000_000);
                payment_id += 1;
            }
            order_id += 1;
        }
        ob.push(RecordBatch::try_new(
            Arc::clone(&o_schema),
            vec![
                Arc::new(o_id.finish()),
                Arc::new(o_cust.finish()),
                Arc::new(o_ts.finish()),
                Arc::new(o_status.finish()),
            ],
        )?);
        ib.push(RecordBatch::try_new(
            Arc::clone(&i_schema),
            vec![
                Arc::new(i_order.finish()),
                Arc::new(i_line.finish()),
                Arc::new(i_prod.finish()),
                Arc::new(i_qty.finish()),
                Arc::new(i_price.finish()),
            ],
        )?);
        pb.push(RecordBatch::try_new(
            Arc::clone(&p_schema),
            vec![
                Arc::new(pay_id.finish()),
                Arc::new(pay_order.finish()),
                Arc::new(pay_method.finish()),
                Arc::new(pay_amount.finish()),
                Arc::new(pay_ts.finish()),
            ],
        )?);
    }
    tables.push(("orders", ob));
    tables.push(("order_items", ib));
    tables.push(("payments", pb));
    Ok(DemoData { tables })
}

fn ascii_lower(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'á' | 'ã' | 'à' => 'a',
            'é' | 'ê' => 'e',
            'í' => 'i',
            'ó' | 'õ' => 'o',
            'ú' => 'u',
            'ç' => 'c',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The report printed at the end of the demo, from the marts `strata build` made: (title,
/// SQL).
pub(crate) const REPORT: &[(&str, &str)] = &[
    (
        "Revenue by month (last 12 months, completed and shipped orders)",
        "SELECT order_month AS month, count(*) AS orders, sum(revenue) AS revenue
         FROM analytics.fct_orders
         WHERE is_revenue
         GROUP BY order_month ORDER BY month DESC LIMIT 12",
    ),
    (
        "Top 5 products by revenue",
        "SELECT p.product_name AS name, p.category, sum(i.quantity) AS units,
                sum(i.line_amount) AS revenue
         FROM analytics.stg_order_items i
         JOIN analytics.fct_orders o ON o.order_id = i.order_id
         JOIN analytics.stg_products p ON p.product_id = i.product_id
         WHERE o.is_revenue
         GROUP BY p.product_name, p.category ORDER BY revenue DESC LIMIT 5",
    ),
    (
        "Customers by RFV segment (analytics.customer_rfv)",
        "SELECT r.segment_name AS segment, count(*) AS customers,
                round(avg(r.recency_days)) AS avg_days_since_order,
                round(avg(r.frequency), 1) AS avg_orders,
                sum(r.monetary_value) AS revenue
         FROM analytics.customer_rfv r
         JOIN analytics.rfv_segments s ON s.segment_code = r.segment_code
         GROUP BY r.segment_name, s.priority ORDER BY s.priority",
    ),
];

/// `(path, text)` of a file of the demo's dbt project, embedded from `crates/strata/demo/`.
macro_rules! demo_file {
    ($path:literal) => {
        ($path, include_str!(concat!("../demo/", $path)))
    };
}

/// The demo's dbt project (`crates/strata/demo/`): raw sources → staging views →
/// ephemeral intermediate models → mart tables (`fct_orders`, `dim_customers`,
/// `customer_rfv`), seeds, a snapshot, data and unit tests, docs. Plain dbt: it also builds
/// with dbt-core and dbt-duckdb.
pub(crate) const DBT_PROJECT: &[(&str, &str)] = &[
    demo_file!("dbt_project.yml"),
    demo_file!("models/docs.md"),
    demo_file!("models/intermediate/_intermediate.yml"),
    demo_file!("models/intermediate/int_customer_orders.sql"),
    demo_file!("models/intermediate/int_order_totals.sql"),
    demo_file!("models/marts/_marts.yml"),
    demo_file!("models/marts/_unit_tests.yml"),
    demo_file!("models/marts/customer_rfv.sql"),
    demo_file!("models/marts/dim_customers.sql"),
    demo_file!("models/marts/fct_orders.sql"),
    demo_file!("models/staging/_sources.yml"),
    demo_file!("models/staging/_staging.yml"),
    demo_file!("models/staging/stg_customers.sql"),
    demo_file!("models/staging/stg_order_items.sql"),
    demo_file!("models/staging/stg_orders.sql"),
    demo_file!("models/staging/stg_payments.sql"),
    demo_file!("models/staging/stg_products.sql"),
    demo_file!("seeds/_seeds.yml"),
    demo_file!("seeds/country_regions.csv"),
    demo_file!("seeds/rfv_segments.csv"),
    demo_file!("snapshots/customers_snapshot.sql"),
    demo_file!("tests/assert_orders_are_paid_in_full.sql"),
    demo_file!("tests/generic/is_between.sql"),
];

/// Writes the files of [`DBT_PROJECT`] that `root` does not hold yet, so a rerun keeps the
/// user's edits. Returns the paths written.
pub(crate) fn write_dbt_project(root: &std::path::Path) -> Result<Vec<&'static str>> {
    let mut written = Vec::new();
    for (path, text) in DBT_PROJECT {
        let file = root.join(path);
        if file.exists() {
            continue;
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&file, text)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()))?;
        written.push(*path);
    }
    Ok(written)
}

/// Where the demo's operational data lives before Strata ingests it.
pub(crate) enum Operational<'a> {
    /// `data/lumen_goods.db`, a SQLite file in the project.
    Sqlite,
    /// A schema `lumen_goods` in this PostgreSQL database (replaced if it exists).
    Postgres(&'a str),
}

/// The shop's application tables (customers, orders, order items), by name, with keys.
const APP_TABLES: &[(&str, &[&str])] = &[
    ("customers", &["customer_id"]),
    ("orders", &["order_id"]),
    ("order_items", &["order_id", "line_no"]),
];

/// Schema of the demo's tables in PostgreSQL.
pub(crate) const PG_SCHEMA: &str = "lumen_goods";

fn sql_type(t: &DataType, sqlite: bool) -> &'static str {
    match t {
        DataType::Int64 => "BIGINT",
        DataType::Int32 => "INTEGER",
        DataType::Decimal128(..) => "DECIMAL(12,2)",
        DataType::Date32 => "DATE",
        DataType::Timestamp(..) if sqlite => "TIMESTAMP",
        DataType::Timestamp(..) => "TIMESTAMPTZ",
        _ => "TEXT",
    }
}

fn create_table_sql(name: &str, schema: &Schema, key: &[&str], sqlite: bool) -> String {
    let cols: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "{} {}{}",
                f.name(),
                sql_type(f.data_type(), sqlite),
                if f.is_nullable() { "" } else { " NOT NULL" }
            )
        })
        .collect();
    let table = if sqlite {
        name.to_string()
    } else {
        format!("{PG_SCHEMA}.{name}")
    };
    format!(
        "CREATE TABLE {table} ({}, PRIMARY KEY ({}))",
        cols.join(", "),
        key.join(", ")
    )
}

/// Each value of a batch as text (`None` for NULL), row by row.
fn text_rows(batch: &RecordBatch) -> Result<Vec<Vec<Option<String>>>> {
    use strata_engine::datafusion::arrow::array::Array;
    use strata_engine::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((0..batch.num_rows())
        .map(|r| {
            batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(c, f)| (!c.is_null(r)).then(|| f.value(r).to_string()))
                .collect()
        })
        .collect())
}

fn table<'a>(data: &'a DemoData, name: &str) -> &'a [RecordBatch] {
    data.tables
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| b.as_slice())
        .unwrap_or_default()
}

/// Writes the application tables to SQLite or PostgreSQL, the payments as CSV exports and
/// the product catalog as JSON, and the `sources/*.yml` that describe them.
pub(crate) async fn write_operational(
    root: &std::path::Path,
    data: &DemoData,
    target: Operational<'_>,
) -> Result<()> {
    match target {
        Operational::Sqlite => write_sqlite(&root.join("data/lumen_goods.db"), data).await?,
        Operational::Postgres(url) => write_postgres(url, data).await?,
    }
    write_payments_csv(&root.join("landing/payments"), table(data, "payments"))?;
    write_products_json(&root.join("landing/catalog"), table(data, "products"))?;
    let app = match target {
        Operational::Sqlite => "# The shop's application database.\ntype: sqlite\nurl: sqlite://data/lumen_goods.db\nstreams:\n".to_string(),
        Operational::Postgres(url) => format!(
            "# The shop's application database.\ntype: postgres\nurl: {url}\nschemas: [{PG_SCHEMA}]\nstreams:\n"
        ),
    };
    let prefix = match target {
        Operational::Sqlite => String::new(),
        Operational::Postgres(_) => format!("{PG_SCHEMA}."),
    };
    let streams = format!(
        "  - table: {prefix}customers\n    destination: raw.customers\n\
         \x20 - table: {prefix}orders\n    mode: incremental\n    cursor: order_id\n    primary_key: [order_id]\n    destination: raw.orders\n\
         \x20 - table: {prefix}order_items\n    mode: incremental\n    cursor: order_id\n    primary_key: [order_id, line_no]\n    destination: raw.order_items\n"
    );
    std::fs::create_dir_all(root.join("sources"))?;
    std::fs::write(root.join("sources/shop.yml"), app + &streams)?;
    std::fs::write(
        root.join("sources/exports.yml"),
        "# Files other systems drop in landing/: payment exports (CSV) and the product catalog (JSON).\n\
         type: files\n\
         url: landing\n\
         streams:\n\
         \x20 - name: payments\n    mode: incremental          # each export file is loaded once\n    primary_key: [payment_id]\n    destination: raw.payments\n    options:\n      path: \"payments/*.csv\"\n      column_types: \"amount=decimal(12,2)\"\n\
         \x20 - name: products\n    destination: raw.products\n    options:\n      path: catalog/products.json\n",
    )?;
    Ok(())
}

async fn write_sqlite(path: &std::path::Path, data: &DemoData) -> Result<()> {
    use sqlx::{Connection, Executor};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let mut conn = sqlx::sqlite::SqliteConnection::connect_with(&opts).await?;
    let mut tx = conn.begin().await?;
    for (name, key) in APP_TABLES {
        let batches = table(data, name);
        let Some(first) = batches.first() else {
            continue;
        };
        tx.execute(sqlx::AssertSqlSafe(create_table_sql(
            name,
            &first.schema(),
            key,
            true,
        )))
        .await?;
        let ncols = first.num_columns();
        for b in batches {
            for chunk in text_rows(b)?.chunks(500) {
                let row = format!("({})", vec!["?"; ncols].join(", "));
                let sql = format!(
                    "INSERT INTO {name} VALUES {}",
                    vec![row.as_str(); chunk.len()].join(", ")
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for r in chunk {
                    for v in r {
                        q = q.bind(v.clone());
                    }
                }
                q.execute(&mut *tx).await?;
            }
        }
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

async fn write_postgres(url: &str, data: &DemoData) -> Result<()> {
    use futures::SinkExt;
    let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the PostgreSQL of --postgres: {e}"))?;
    tokio::spawn(conn);
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE; CREATE SCHEMA {PG_SCHEMA};"
    ))
    .await?;
    for (name, key) in APP_TABLES {
        let batches = table(data, name);
        let Some(first) = batches.first() else {
            continue;
        };
        tx.batch_execute(&create_table_sql(name, &first.schema(), key, false))
            .await?;
        let sink = tx
            .copy_in(&format!(
                "COPY {PG_SCHEMA}.{name} FROM STDIN (FORMAT csv, NULL '\\N')"
            ))
            .await?;
        futures::pin_mut!(sink);
        for b in batches {
            let mut buf = String::new();
            for r in text_rows(b)? {
                let line: Vec<String> = r
                    .into_iter()
                    .map(|v| match v {
                        None => "\\N".to_string(),
                        Some(s) => csv_field(&s),
                    })
                    .collect();
                buf.push_str(&line.join(","));
                buf.push('\n');
            }
            sink.send(bytes::Bytes::from(buf)).await?;
        }
        sink.finish().await?;
    }
    tx.commit().await?;
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s == "\\N" {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Payments as the payment provider exports them: CSV files of 2,500 payments each.
fn write_payments_csv(dir: &std::path::Path, batches: &[RecordBatch]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let header: Vec<String> = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut part = 0;
    let mut out = String::new();
    let mut in_part = 0;
    let flush = |out: &mut String, part: &mut usize| -> Result<()> {
        *part += 1;
        std::fs::write(
            dir.join(format!("payments-{part:04}.csv")),
            format!("{}\n{out}", header.join(",")),
        )?;
        out.clear();
        Ok(())
    };
    for b in batches {
        for r in text_rows(b)? {
            let line: Vec<String> = r
                .into_iter()
                .map(|v| v.map(|s| csv_field(&s)).unwrap_or_default())
                .collect();
            out.push_str(&line.join(","));
            out.push('\n');
            in_part += 1;
            if in_part == 2_500 {
                flush(&mut out, &mut part)?;
                in_part = 0;
            }
        }
    }
    if in_part > 0 {
        flush(&mut out, &mut part)?;
    }
    Ok(())
}

/// The product catalog as a JSON document, prices nested as `{"amount", "currency"}`.
fn write_products_json(dir: &std::path::Path, batches: &[RecordBatch]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut products = Vec::new();
    for b in batches {
        for r in text_rows(b)? {
            let [Some(id), Some(name), Some(category), Some(price)] =
                <[Option<String>; 4]>::try_from(r)
                    .map_err(|_| anyhow::anyhow!("the products table has four columns"))?
            else {
                anyhow::bail!("a product has an empty field");
            };
            products.push(serde_json::json!({
                "product_id": id.parse::<i64>()?,
                "name": name,
                "category": category,
                "price": {"amount": price.parse::<f64>()?, "currency": "USD"},
            }));
        }
    }
    std::fs::write(
        dir.join("products.json"),
        serde_json::to_string_pretty(&products)?,
    )?;
    Ok(())
}

/// The demo's users (name, password, superuser, region attribute). Demo passwords are
/// accepted from this machine only (the server takes passwords from other hosts over TLS).
pub(crate) const USERS: &[(&str, &str, bool, Option<&str>)] = &[
    ("admin", "admin", true, None),
    ("analyst", "analyst", false, Some("Europe")),
];

/// Who sees what when the demo is served: the `analyst` role reads the marts, only its
/// region's orders and customers, with customers' emails masked. Idempotent: what exists
/// is kept.
pub(crate) async fn setup_access(meta: &strata_meta::MetaStore) -> Result<()> {
    use strata_meta::{ColumnMask, Grant, NewUser, ObjectKind, Privilege, RowPolicy};
    for (name, password, superuser, region) in USERS {
        if meta.user(name).await?.is_some() {
            continue;
        }
        let password = password.to_string();
        let hash =
            tokio::task::spawn_blocking(move || strata_server::auth::hash_password(&password))
                .await??;
        meta.create_user(&NewUser {
            name: name.to_string(),
            password_hash: Some(hash),
            attributes: region
                .map(|r| [("region".to_string(), r.to_string())].into())
                .unwrap_or_default(),
            superuser: *superuser,
        })
        .await?;
    }
    if !meta.roles().await?.iter().any(|r| r.name == "analysts") {
        meta.create_role("analysts").await?;
    }
    meta.grant_role("analysts", "analyst").await?;
    meta.grant(&Grant {
        privilege: Privilege::Select,
        object_kind: ObjectKind::Namespace,
        object: "analytics".into(),
        columns: None,
        grantee: "analysts".into(),
        granted_by: "strata demo".into(),
    })
    .await?;
    for table in ["analytics.fct_orders", "analytics.dim_customers"] {
        meta.put_row_policy(&RowPolicy {
            name: "own_region".into(),
            table: table.into(),
            predicate: "sales_region = current_user_attribute('region')".into(),
            applies_to: "analysts".into(),
        })
        .await?;
    }
    meta.put_column_mask(&ColumnMask {
        table: "analytics.dim_customers".into(),
        column: "email".into(),
        mask: "email".into(),
        exempt: vec![],
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_dbt_project_lists_every_file_of_the_demo_folder() {
        fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap();
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo");
        let mut on_disk = Vec::new();
        walk(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = DBT_PROJECT.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "add new files of crates/strata/demo/ to demo::DBT_PROJECT"
        );
    }

    #[test]
    fn writing_the_dbt_project_again_keeps_edits_and_restores_missing_files() {
        let tmp = tempfile::tempdir().unwrap();
        let written = write_dbt_project(tmp.path()).unwrap();
        assert_eq!(written.len(), DBT_PROJECT.len());
        let edited = tmp.path().join("seeds/rfv_segments.csv");
        std::fs::write(&edited, "segment_code\nvip\n").unwrap();
        std::fs::remove_file(tmp.path().join("models/marts/customer_rfv.sql")).unwrap();
        let written = write_dbt_project(tmp.path()).unwrap();
        assert_eq!(written, ["models/marts/customer_rfv.sql"]);
        assert_eq!(
            std::fs::read_to_string(&edited).unwrap(),
            "segment_code\nvip\n"
        );
    }

    #[test]
    fn generation_is_deterministic() {
        let a = generate(1_000).unwrap();
        let b = generate(1_000).unwrap();
        assert_eq!(a.rows(), b.rows());
        for ((na, ba), (nb, bb)) in a.tables.iter().zip(&b.tables) {
            assert_eq!(na, nb);
            assert_eq!(ba, bb);
        }
        let orders = &a.tables.iter().find(|(n, _)| *n == "orders").unwrap().1;
        assert_eq!(orders.iter().map(|b| b.num_rows()).sum::<usize>(), 1_000);
    }
}
