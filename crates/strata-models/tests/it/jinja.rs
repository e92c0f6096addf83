use strata_models::{CompileOptions, LoadOptions, Manifest};

/// Compiles `sql` as the model `models/probe.sql` of a copy of the fixture.
fn render_with(sql: &str, opts: &CompileOptions) -> String {
    let dir = crate::copy_fixture();
    std::fs::write(dir.path().join("models/probe.sql"), sql).unwrap();
    let m = Manifest::load(dir.path(), &LoadOptions::default()).unwrap();
    m.compile_node("model.jaffle_shop.probe", opts).unwrap()
}

/// Like [`render`], with `macros/probe_macros.sql` holding `macros`.
fn render_with_macros(macros: &str, sql: &str) -> String {
    let dir = crate::copy_fixture();
    std::fs::write(dir.path().join("macros/probe_macros.sql"), macros).unwrap();
    std::fs::write(dir.path().join("models/probe.sql"), sql).unwrap();
    let m = Manifest::load(dir.path(), &LoadOptions::default()).unwrap();
    m.compile_node("model.jaffle_shop.probe", &CompileOptions::default())
        .unwrap()
}

fn render(sql: &str) -> String {
    render_with(sql, &CompileOptions::default())
}

#[test]
fn ref_forms() {
    assert_eq!(render("{{ ref('orders') }}"), "analytics.orders");
    assert_eq!(
        render("{{ ref('shop_utils', 'util_calendar') }}"),
        "analytics.util_calendar"
    );
    assert_eq!(render("{{ ref('orders', version=2) }}"), "analytics.orders");
    assert_eq!(
        render("{{ ref('orders').schema }}.{{ ref('orders').identifier }}"),
        "analytics.orders"
    );
    assert_eq!(render("{{ source('shop', 'events') }}"), "raw.shop_events");
}

#[test]
fn config_this_target_and_incremental() {
    assert_eq!(
        render(
            "{{ config(materialized='incremental', unique_key='id') }}{{ this }}|{{ config.get('unique_key') }}|{{ config.get('missing', 'd') }}"
        ),
        "analytics.probe|id|d"
    );
    assert_eq!(
        render(
            "{{ target.name }} {{ target.schema }} {{ target.type }} {{ target.threads }} {{ target.database }}"
        ),
        "dev analytics strata 4 strata"
    );
    let sql =
        "select 1{% if is_incremental() %} where x > (select max(x) from {{ this }}){% endif %}";
    assert_eq!(render(sql), "select 1");
    assert_eq!(
        render_with(
            sql,
            &CompileOptions {
                is_incremental: true,
                ..Default::default()
            }
        ),
        "select 1 where x > (select max(x) from analytics.probe)"
    );
    assert_eq!(render("{{ execute }}"), "True");
}

#[test]
fn var_and_env_var() {
    assert_eq!(render("{{ var('start_date') }}"), "2018-01-01");
    assert_eq!(render("{{ var('nope', 'fallback') }}"), "fallback");
    assert_eq!(render("{{ var('payment_methods') | length }}"), "4");
    // SAFETY of the test: the variable name is unique to this test.
    unsafe { std::env::set_var("STRATA_MODELS_TEST_ENV", "hello") };
    assert_eq!(render("{{ env_var('STRATA_MODELS_TEST_ENV') }}"), "hello");
    assert_eq!(
        render("{{ env_var('STRATA_MODELS_UNSET_ENV', 'dflt') }}"),
        "dflt"
    );
}

#[test]
fn macros_return_dispatch_and_packages() {
    assert_eq!(
        render("{{ cents_label('x') }}"),
        "concat(cast(x as varchar), ' USD')"
    );
    assert_eq!(
        render("{{ shop_utils.cents_to_dollars('amount', scale=0) }}"),
        "round(cast(amount as double) / 100, 0)"
    );
    let macros = "{% macro twice(x) %}ignored {{ return(x * 2) }}{% endmacro %}\n\
        {% macro pair(a, b=2) %}{{ return({'a': a, 'b': b}) }}{% endmacro %}\n\
        {% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}\n\
        {% macro outer() %}{{ return(twice(5) + pair(1)['b']) }}{% endmacro %}";
    assert_eq!(render_with_macros(macros, "{{ twice(21) }}"), "42");
    assert_eq!(
        render_with_macros(macros, "{% set p = pair(1, b=3) %}{{ p.a }}-{{ p['b'] }}"),
        "1-3"
    );
    assert_eq!(render_with_macros(macros, "{{ outer() }}"), "12");
    assert_eq!(
        render_with_macros(macros, "{% call wrap('x') %}body{% endcall %}"),
        "<x>body</x>"
    );
    assert_eq!(
        render("{{ adapter.dispatch('cents_label', 'jaffle_shop')('y') }}"),
        "concat(cast(y as varchar), ' USD')"
    );
    assert_eq!(
        render("{{ adapter.dispatch('date_trunc', 'dbt')('month', 'd') }}"),
        "date_trunc('month', d)"
    );
    assert_eq!(
        render("{{ adapter.quote('Weird Name') }}"),
        "\"Weird Name\""
    );
}

#[test]
fn helpers_and_modules() {
    assert_eq!(render("{{ run_started_at.strftime('%Y') | length }}"), "4");
    assert_eq!(
        render(
            "{{ modules.datetime.datetime.strptime('2024-03-05', '%Y-%m-%d').strftime('%d/%m/%Y') }}"
        ),
        "05/03/2024"
    );
    assert_eq!(render("{{ invocation_id | length }}"), "36");
    assert_eq!(
        render("{{ modules.re.sub('a(b)', '[\\\\1]', 'xabx') }}"),
        "x[b]x"
    );
    assert_eq!(render("{{ zip([1, 2], ['a', 'b']) | list | length }}"), "2");
    assert_eq!(render("{{ tojson({'a': 1}) }}"), "{\"a\":1}");
    assert_eq!(render("{{ fromjson('{\"a\": [1, 2]}')['a'][1] }}"), "2");
    assert_eq!(render("{{ set([1, 1, 2]) | length }}"), "2");
    assert_eq!(
        render("{{ 'a,b'.split(',') | join('-') }}{{ 'X'.lower() }}"),
        "a-bx"
    );
    assert_eq!(
        render("{{ log('hi', info=True) }}{{ print('p') }}{{ exceptions.warn('w') }}done"),
        "done"
    );
}

#[test]
fn cross_database_macros() {
    let cases = [
        ("{{ dbt.date_trunc('day', 'ts') }}", "date_trunc('day', ts)"),
        (
            "{{ dbt.datediff('a', 'b', 'month') }}",
            "CAST((date_part('year', CAST(b AS TIMESTAMP)) - date_part('year', CAST(a AS TIMESTAMP))) * 12 + date_part('month', CAST(b AS TIMESTAMP)) - date_part('month', CAST(a AS TIMESTAMP)) AS BIGINT)",
        ),
        (
            "{{ dbt.datediff('a', 'b', 'hour') }}",
            "CAST((date_part('epoch', date_trunc('hour', CAST(b AS TIMESTAMP))) - date_part('epoch', date_trunc('hour', CAST(a AS TIMESTAMP)))) / 3600 AS BIGINT)",
        ),
        (
            "{{ dbt.dateadd('day', 3, 'd') }}",
            "(CAST(d AS TIMESTAMP) + INTERVAL '3 day')",
        ),
        (
            "{{ dbt.dateadd('month', 'n', 'd') }}",
            "(CAST(d AS TIMESTAMP) + CAST(concat(CAST((n) AS VARCHAR), ' month') AS INTERVAL))",
        ),
        (
            "{{ dbt.safe_cast('x', dbt.type_int()) }}",
            "TRY_CAST(x AS INT)",
        ),
        (
            "{{ dbt.type_string() }} {{ dbt.type_bigint() }} {{ dbt.type_float() }} {{ dbt.type_numeric() }} {{ dbt.type_timestamp() }} {{ dbt.type_boolean() }}",
            "VARCHAR BIGINT DOUBLE DECIMAL(28, 6) TIMESTAMP BOOLEAN",
        ),
        ("{{ dbt.concat(['a', \"'-'\", 'b']) }}", "concat(a, '-', b)"),
        ("{{ dbt.current_timestamp() }}", "now()"),
        ("{{ dbt.hash('x') }}", "md5(CAST(x AS VARCHAR))"),
        ("{{ dbt.cast_bool_to_text('b') }}", "CAST(b AS VARCHAR)"),
        (
            "{{ dbt.any_value('x') }} {{ dbt.bool_or('y') }}",
            "any_value(x) bool_or(y)",
        ),
        (
            "{{ dbt.listagg('x', \"', '\", 'order by x') }}",
            "string_agg(x, ', ' order by x)",
        ),
        (
            "{{ dbt.listagg('x', \"','\", 'order by x', 2) }}",
            "array_to_string(array_slice(array_agg(x order by x), 1, 2), ',')",
        ),
        (
            "{{ dbt.split_part('s', \"'-'\", 2) }}",
            "split_part(s, '-', 2)",
        ),
        (
            "{{ dbt.last_day('d', 'month') }}",
            "CAST(date_trunc('month', d) + INTERVAL '1 month' - INTERVAL '1 day' AS DATE)",
        ),
        ("{{ dbt.escape_single_quotes(\"it's\") }}", "it''s"),
        ("{{ dbt.string_literal(\"it's\") }}", "'it''s'"),
        (
            "{{ dbt.right('s', 2) }} {{ dbt.length('s') }}",
            "right(s, 2) length(s)",
        ),
        (
            "{{ dbt.replace('f', \"'a'\", \"'b'\") }}",
            "replace(f, 'a', 'b')",
        ),
        ("{{ dbt.position(\"'b'\", 's') }}", "strpos(s, 'b')"),
        ("{{ date_trunc('week', 'd') }}", "date_trunc('week', d)"),
    ];
    for (sql, want) in cases {
        assert_eq!(render(sql), want, "{sql}");
    }
}

#[test]
fn generate_schema_name_override_is_used() {
    let dir = crate::copy_fixture();
    std::fs::write(
        dir.path().join("macros/generate_schema_name.sql"),
        "{% macro generate_schema_name(custom_schema_name, node) -%}\n{{ custom_schema_name or 'main' }}\n{%- endmacro %}\n{% macro generate_alias_name(custom_alias_name=none, node=none) -%}\n{{ node.name }}_v\n{%- endmacro %}",
    )
    .unwrap();
    let m = Manifest::load(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(
        m.nodes["model.jaffle_shop.stg_orders"].relation.render(),
        "staging.stg_orders_v"
    );
    assert_eq!(
        m.nodes["model.jaffle_shop.orders"].relation.render(),
        "main.orders_v"
    );
}

/// A runner that answers every query with the same two-column table and records the SQL.
#[derive(Debug, Default)]
struct FakeRunner {
    queries: std::sync::Mutex<Vec<String>>,
}

impl strata_models::QueryRunner for FakeRunner {
    fn query(&self, sql: &str) -> Result<strata_models::QueryResult, String> {
        self.queries.lock().unwrap().push(sql.trim().to_string());
        if sql.contains("boom") {
            return Err("table boom not found".into());
        }
        Ok(strata_models::QueryResult {
            columns: vec!["status".into(), "n".into()],
            types: vec!["varchar".into(), "bigint".into()],
            rows: vec![
                vec![serde_json::json!("placed"), serde_json::json!(3)],
                vec![serde_json::json!("shipped"), serde_json::Value::Null],
            ],
        })
    }
    fn columns(&self, relation: &str) -> Result<Vec<(String, String)>, String> {
        self.queries
            .lock()
            .unwrap()
            .push(format!("columns {relation}"));
        Ok(vec![
            ("id".into(), "bigint".into()),
            ("status".into(), "varchar".into()),
            ("amount".into(), "double".into()),
        ])
    }
}

/// Loads the fixture with `models/probe.sql` = `sql` and compiles it with a [`FakeRunner`].
fn render_querying(macros: &str, sql: &str) -> (Result<String, String>, Vec<String>) {
    let dir = crate::copy_fixture();
    std::fs::write(dir.path().join("macros/probe_macros.sql"), macros).unwrap();
    std::fs::write(dir.path().join("models/probe.sql"), sql).unwrap();
    let m = Manifest::load(dir.path(), &LoadOptions::default()).unwrap();
    let runner = std::sync::Arc::new(FakeRunner::default());
    m.set_query_runner(std::sync::Arc::<FakeRunner>::clone(&runner));
    let out = m
        .compile_node("model.jaffle_shop.probe", &CompileOptions::default())
        .map_err(|e| e.to_string());
    let queries = runner.queries.lock().unwrap().clone();
    (out, queries)
}

#[test]
fn run_query_returns_an_agate_like_table() {
    let sql = "{% set t = run_query('select status, n from ' ~ ref('orders')) %}{% if execute %}\
{{ t.column_names | join(',') }}|{{ t | length }}|{{ t.rows[0][0] }}|{{ t.rows[0]['n'] }}|\
{{ t.columns[0].name }}={{ t.columns[0].values() | join(',') }}|{{ t.columns['n'].data_type }}|\
{% for row in t %}{{ row.status }}:{{ row[1] }};{% endfor %}|\
{% for row in t.rows %}{{ row | join('/') }};{% endfor %}|{{ t.columns | length }}|{{ t[1][0] }}{% endif %}";
    let (out, queries) = render_querying("", sql);
    assert_eq!(
        out.unwrap(),
        "status,n|2|placed|3|status=placed,shipped|bigint|placed:3;shipped:None;|placed/3;shipped/None;|2|shipped"
    );
    assert_eq!(queries, vec!["select status, n from analytics.orders"]);
}

#[test]
fn get_column_values_idiom_from_a_macro() {
    // dbt_utils' get_column_values, reduced.
    let macros = "{% macro column_values(table, column) -%}\
{%- if not execute -%}{{ return([]) }}{%- endif -%}\
{%- set results = run_query('select distinct ' ~ column ~ ' from ' ~ table) -%}\
{%- set values = results.columns[0].values() -%}\
{{ return(values) }}\
{%- endmacro %}";
    let sql = "select {% for v in column_values(ref('orders'), 'status') %}sum(case when status = '{{ v }}' then 1 end) as {{ v }}{% if not loop.last %}, {% endif %}{% endfor %} from {{ ref('orders') }}";
    let (out, queries) = render_querying(macros, sql);
    assert_eq!(
        out.unwrap(),
        "select sum(case when status = 'placed' then 1 end) as placed, sum(case when status = 'shipped' then 1 end) as shipped from analytics.orders"
    );
    assert_eq!(
        queries,
        vec!["select distinct status from analytics.orders"]
    );
}

#[test]
fn statement_blocks_and_load_result() {
    let sql = "{% call statement('stats', fetch_result=True) %}select count(*) from {{ ref('orders') }}{% endcall %}\
{% set r = load_result('stats') %}{% if execute %}{{ r['table'].rows[0][0] }}|{{ r['data'][1][0] }}|{{ r['response'].rows_affected }}|{{ r.table.column_names[1] }}\
{% endif %}{% call statement('quiet') %}delete from x{% endcall %}{% if execute %}|{{ load_result('quiet').table | length }}|{{ load_result('missing') is none }}{% endif %}";
    let (out, queries) = render_querying("", sql);
    assert_eq!(out.unwrap(), "placed|shipped|2|n|0|True");
    assert_eq!(
        queries,
        vec!["select count(*) from analytics.orders", "delete from x"]
    );
    // Inside a macro, as dbt's materializations and packages use it.
    let macros = "{% macro first_status() -%}\
{%- call statement('s', fetch_result=True) -%}select status from t{%- endcall -%}\
{%- if execute %}{{ return(load_result('s')['data'][0][0]) }}{% endif -%}\
{%- endmacro %}";
    let (out, _) = render_querying(macros, "{{ first_status() }}");
    assert_eq!(out.unwrap(), "placed");
}

#[test]
fn get_columns_in_relation_gives_column_objects() {
    let sql = "{% set cols = adapter.get_columns_in_relation(ref('orders')) %}{% if execute %}\
select {% for c in cols if c.name != 'amount' %}{{ c.quoted }}{% if not loop.last %}, {% endif %}{% endfor %} from {{ ref('orders') }} \
-- {{ cols[0].column }} {{ cols[0].data_type }} {{ cols[1].dtype }} {{ cols[1].is_string() }} {{ cols[2].is_number() }} {{ cols | map(attribute='name') | join(',') }}{% endif %}";
    let (out, queries) = render_querying("", sql);
    assert_eq!(
        out.unwrap(),
        "select \"id\", \"status\" from analytics.orders -- id bigint varchar True True id,status,amount"
    );
    assert_eq!(queries, vec!["columns analytics.orders"]);
}

#[test]
fn queries_are_skipped_at_parse_time_and_need_a_connection_at_compile_time() {
    // At parse time `execute` is false: the guarded query does not run, an unguarded one
    // returns none, `statement` runs nothing.
    let sql = "{% set t = run_query('select 1') %}{% if execute %}{{ t.rows[0][0] }}{% endif %}\
{% call statement('s', fetch_result=True) %}select 2{% endcall %}|{{ adapter.get_columns_in_relation(this) | length }}";
    let (out, queries) = render_querying("", sql);
    assert_eq!(out.unwrap(), "placed|3");
    // Only the compile-phase render ran queries.
    assert_eq!(
        queries,
        vec!["select 1", "select 2", "columns analytics.probe"]
    );
    // `strata compile` has no connection.
    let dir = crate::copy_fixture();
    std::fs::write(
        dir.path().join("models/probe.sql"),
        "{% if execute %}{% set t = run_query('select 1') %}{% endif %}select 1",
    )
    .unwrap();
    let m = Manifest::load(dir.path(), &LoadOptions::default()).unwrap();
    let err = m
        .compile_node("model.jaffle_shop.probe", &CompileOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("run_query needs a database connection"),
        "{err}"
    );
    assert!(err.contains("models/probe.sql"), "{err}");
    // A failing query names the query.
    let (out, _) = render_querying("", "{{ run_query('select * from boom') }}");
    let err = out.unwrap_err();
    assert!(
        err.contains("run_query failed: table boom not found"),
        "{err}"
    );
}
