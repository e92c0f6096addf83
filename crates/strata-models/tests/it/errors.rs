use strata_models::{Error, LoadOptions, Manifest};

fn load_with(path: &str, text: &str) -> Error {
    let dir = crate::copy_fixture();
    std::fs::write(dir.path().join(path), text).unwrap();
    Manifest::load(dir.path(), &LoadOptions::default()).unwrap_err()
}

#[test]
fn bad_yaml_names_file_line_column() {
    let e = load_with(
        "models/marts/schema.yml",
        "version: 2\nmodels:\n  - name: a\n   bad: [\n",
    );
    let s = e.to_string();
    assert!(s.starts_with("models/marts/schema.yml:4:"), "{s}");
    assert!(s.contains("invalid YAML"), "{s}");
}

#[test]
fn jinja_syntax_error_names_file_line_column() {
    let e = load_with(
        "models/marts/broken.sql",
        "select 1\nfrom {{ ref('orders') \n",
    );
    let s = e.to_string();
    assert!(s.starts_with("models/marts/broken.sql:2:"), "{s}");
}

#[test]
fn jinja_error_inside_a_macro_points_at_the_macro() {
    let dir = crate::copy_fixture();
    std::fs::write(
        dir.path().join("macros/bad.sql"),
        "{% macro explode() %}\n  {{ exceptions.raise_compiler_error('boom') }}\n{% endmacro %}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("models/uses_bad.sql"),
        "select {{ explode() }}",
    )
    .unwrap();
    let e = Manifest::load(dir.path(), &LoadOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "macros/bad.sql:2:16: Compilation Error: boom"
    );
}

#[test]
fn missing_var_is_named() {
    let e = load_with(
        "models/needs_var.sql",
        "select 1\nwhere x = {{ var('region') }}",
    );
    let s = e.to_string();
    assert!(s.starts_with("models/needs_var.sql:2:"), "{s}");
    assert!(s.contains("Required var 'region' not found"), "{s}");
}

#[test]
fn unknown_ref_suggests_the_closest_name() {
    let e = load_with("models/typo.sql", "select *\nfrom {{ ref('stg_ordrs') }}");
    assert_eq!(
        e.to_string(),
        "models/typo.sql:2:13: ref('stg_ordrs') names no model, seed or snapshot; did you mean `stg_orders`?"
    );
}

#[test]
fn unknown_source_suggests() {
    let e = load_with(
        "models/src.sql",
        "select * from {{ source('shop', 'event') }}",
    );
    let s = e.to_string();
    assert!(s.contains("did you mean `shop.events`?"), "{s}");
    assert!(s.starts_with("models/src.sql:1:"), "{s}");
}

#[test]
fn cycle_names_its_models() {
    let dir = crate::copy_fixture();
    std::fs::write(
        dir.path().join("models/a.sql"),
        "select * from {{ ref('b') }}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("models/b.sql"),
        "select * from {{ ref('a') }}",
    )
    .unwrap();
    let e = Manifest::load(dir.path(), &LoadOptions::default()).unwrap_err();
    match e {
        Error::Cycle { members } => {
            assert_eq!(members.len(), 3, "{members:?}");
            assert_eq!(members.first(), members.last());
            assert!(members.contains(&"model.jaffle_shop.a".to_string()));
            assert!(members.contains(&"model.jaffle_shop.b".to_string()));
        }
        other => panic!("expected a cycle, got {other}"),
    }
}

#[test]
fn unknown_generic_test_points_at_the_yml_entry() {
    let e = load_with(
        "models/marts/extra.yml",
        "version: 2\nmodels:\n  - name: orders\n    columns:\n      - name: order_id\n        tests:\n          - uniqe\n",
    );
    let s = e.to_string();
    assert!(s.starts_with("models/marts/extra.yml:7:"), "{s}");
    assert!(s.contains("did you mean `unique`?"), "{s}");
}
