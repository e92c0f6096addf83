//! Grants, row policies and column masks, checked through SQL on secured sessions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::util::pretty::pretty_format_batches;
use strata_engine::{
    AccessPolicy, ColumnMask, Engine, GrantRule, MaskKind, Principal, Privilege, RowFilter,
    Securable, Session,
};
use strata_lake::TableName;

fn t(name: &str) -> TableName {
    let (ns, n) = name.split_once('.').unwrap();
    TableName::new(ns, n).unwrap()
}

fn grant(privilege: Privilege, on: Securable, grantee: &str) -> GrantRule {
    GrantRule {
        privilege,
        on,
        columns: None,
        grantee: grantee.into(),
    }
}

fn policy() -> Arc<AccessPolicy> {
    Arc::new(AccessPolicy {
        grants: vec![
            grant(
                Privilege::Select,
                Securable::Namespace("marts".into()),
                "analyst",
            ),
            GrantRule {
                privilege: Privilege::Select,
                on: Securable::Table(t("raw.people")),
                columns: Some(vec!["id".into(), "region".into()]),
                grantee: "analyst".into(),
            },
            grant(
                Privilege::Insert,
                Securable::Table(t("marts.orders")),
                "loader",
            ),
            grant(
                Privilege::Create,
                Securable::Namespace("sandbox".into()),
                "analyst",
            ),
            grant(
                Privilege::Update,
                Securable::Table(t("marts.orders")),
                "editor",
            ),
            grant(
                Privilege::Delete,
                Securable::Table(t("marts.orders")),
                "editor",
            ),
        ],
        row_filters: vec![RowFilter {
            table: t("marts.orders"),
            name: "own_region".into(),
            predicate: "region = current_user_attribute('region')".into(),
            applies_to: "analyst".into(),
        }],
        masks: vec![
            ColumnMask {
                table: t("marts.orders"),
                column: "email".into(),
                kind: MaskKind::Email,
                exempt: vec!["auditor".into()],
            },
            ColumnMask {
                table: t("marts.orders"),
                column: "cpf".into(),
                kind: "partial(0,2)".parse().unwrap(),
                exempt: vec![],
            },
        ],
    })
}

fn principal(name: &str, roles: &[&str], region: Option<&str>) -> Principal {
    Principal {
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>(),
        attributes: region
            .map(|r| BTreeMap::from([("region".to_string(), r.to_string())]))
            .unwrap_or_default(),
        superuser: false,
    }
}

async fn setup(dir: &std::path::Path) -> Engine {
    let engine = crate::engine_in(dir, None).await;
    let admin = engine.session().await.unwrap();
    admin
        .sql(
            "CREATE TABLE marts.orders AS SELECT * FROM (VALUES \
               (1, 'alice@example.com', '123.456.789-12', 'EU', 10), \
               (2, 'bob@example.com',   '987.654.321-00', 'US', 20), \
               (3, 'carol@example.com', '111.222.333-44', 'EU', 30)) \
             AS v(id, email, cpf, region, amount)",
        )
        .await
        .unwrap();
    admin
        .sql("CREATE VIEW marts.big_orders AS SELECT * FROM marts.orders WHERE amount >= 20")
        .await
        .unwrap();
    admin
        .sql(
            "CREATE TABLE raw.people AS SELECT * FROM (VALUES (1, 'EU', 'secret-1')) \
             AS v(id, region, ssn)",
        )
        .await
        .unwrap();
    engine
}

async fn rows(s: &Session, sql: &str) -> String {
    let batches = s.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&batches).unwrap().to_string()
}

async fn denied(s: &Session, sql: &str) -> String {
    match s.sql(sql).await {
        Ok(b) => panic!(
            "{sql} should be refused, returned:\n{}",
            pretty_format_batches(&b).unwrap()
        ),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                matches!(e, strata_engine::Error::PermissionDenied(_))
                    || msg.contains("not granted")
                    || msg.contains("permission denied"),
                "{sql}: unexpected error {e:?}"
            );
            msg
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_see_their_region_with_masked_values_through_tables_and_views() {
    let dir = tempfile::tempdir().unwrap();
    let engine = setup(dir.path()).await;
    let alice = engine
        .session_for(principal("alice", &["analyst"], Some("EU")), policy())
        .await
        .unwrap();
    let out = rows(
        &alice,
        "SELECT id, email, cpf, region FROM marts.orders ORDER BY id",
    )
    .await;
    assert!(
        out.contains("| 1  | a***@example.com | ***.***.***-12 | EU     |"),
        "{out}"
    );
    assert!(
        out.contains("| 3  | c***@example.com | ***.***.***-44 | EU     |"),
        "{out}"
    );
    assert!(!out.contains("| 2 "), "US row leaked: {out}");
    assert!(!out.contains("alice@"), "clear email leaked: {out}");
    // The view reads the table with its definer's rights, but the policies still apply.
    let out = rows(&alice, "SELECT id, email FROM marts.big_orders ORDER BY id").await;
    assert!(out.contains("| 3  | c***@example.com |"), "{out}");
    assert!(!out.contains("| 2 "), "{out}");
    // Predicates, aggregates and joins see the masked values and filtered rows.
    let out = rows(
        &alice,
        "SELECT count(*) AS n FROM marts.orders WHERE email = 'alice@example.com'",
    )
    .await;
    assert!(out.contains("| 0 |"), "{out}");
    let out = rows(&alice, "SELECT sum(amount) AS s FROM marts.orders").await;
    assert!(out.contains("| 40 |"), "{out}");
    let out = rows(
        &alice,
        "SELECT o.id FROM marts.orders o JOIN marts.orders p ON o.email = p.email ORDER BY 1",
    )
    .await;
    assert!(!out.contains("| 2 "), "{out}");
    // Time travel gets the same policies.
    let out = rows(
        &alice,
        "SELECT id, email FROM marts.orders VERSION AS OF 0 ORDER BY id",
    )
    .await;
    assert!(
        out.contains("a***@example.com") && !out.contains("| 2 "),
        "{out}"
    );

    // An auditor (exempt from the email mask) in another region.
    let us = engine
        .session_for(
            principal("ann", &["analyst", "auditor"], Some("US")),
            policy(),
        )
        .await
        .unwrap();
    let out = rows(&us, "SELECT id, email, cpf FROM marts.orders").await;
    assert!(
        out.contains("| 2  | bob@example.com | ***.***.***-00 |"),
        "{out}"
    );
    assert!(!out.contains("| 1 "), "{out}");

    // No region attribute: the policy matches nothing.
    let none = engine
        .session_for(principal("nobody", &["analyst"], None), policy())
        .await
        .unwrap();
    let out = rows(&none, "SELECT count(*) AS n FROM marts.orders").await;
    assert!(out.contains("| 0 |"), "{out}");

    // A superuser sees everything in clear.
    let root = engine
        .session_for(
            Principal {
                name: "root".into(),
                superuser: true,
                ..Default::default()
            },
            policy(),
        )
        .await
        .unwrap();
    let out = rows(&root, "SELECT email FROM marts.orders ORDER BY id").await;
    assert!(out.contains("bob@example.com"), "{out}");
}

/// Where `needle` first appears in the physical plan `session` makes for `sql`.
async fn in_physical_plan(session: &Session, sql: &str, needle: &str) -> usize {
    let plan = rows(session, &format!("EXPLAIN {sql}")).await;
    let physical = &plan[plan.find("physical_plan").expect(&plan)..];
    physical
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle} in {plan}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_k_listing_masks_only_the_rows_it_shows() {
    let dir = tempfile::tempdir().unwrap();
    let engine = setup(dir.path()).await;
    let eu = principal("alice", &["analyst"], Some("EU"));
    let alice = engine.session_for(eu, policy()).await.unwrap();
    let listing = "SELECT id, email, cpf FROM marts.orders ORDER BY amount DESC LIMIT 1";
    let out = rows(&alice, listing).await;
    assert!(
        out.contains("| 3  | c***@example.com | ***.***.***-44 |"),
        "{out}"
    );
    // The masks are computed above the top-K sort (printed first), on the row it keeps.
    let mask = in_physical_plan(&alice, listing, "strata_mask_email").await;
    let sort = in_physical_plan(&alice, listing, "SortExec: TopK").await;
    assert!(mask < sort, "masks computed below the sort");
    // Sorting by a masked column sorts the masked values, so those are computed first.
    let by_mask = "SELECT id, cpf FROM marts.orders ORDER BY cpf DESC, id LIMIT 2";
    let out = rows(&alice, by_mask).await;
    let first = out.find("| 3  | ***.***.***-44 |").expect(&out);
    let second = out.find("| 1  | ***.***.***-12 |").expect(&out);
    assert!(first < second, "{out}");
    let mask = in_physical_plan(&alice, by_mask, "strata_mask_partial").await;
    let sort = in_physical_plan(&alice, by_mask, "SortExec: TopK").await;
    assert!(
        sort < mask,
        "a sort by a masked column must see masked values"
    );
    // Predicates above the listing still see masked values.
    let out = rows(
        &alice,
        "SELECT count(*) AS n FROM (SELECT email FROM marts.orders ORDER BY amount DESC LIMIT 2) \
         WHERE email = 'carol@example.com'",
    )
    .await;
    assert!(out.contains("| 0 |"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_columns_and_files_outside_the_grants_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let engine = setup(dir.path()).await;
    let alice = engine
        .session_for(principal("alice", &["analyst"], Some("EU")), policy())
        .await
        .unwrap();
    // Column grant: only the granted columns exist.
    let out = rows(&alice, "SELECT * FROM raw.people").await;
    assert!(out.contains("| id | region |"), "{out}");
    assert!(!out.contains("ssn") && !out.contains("secret-1"), "{out}");
    let msg = alice
        .sql("SELECT ssn FROM raw.people")
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("ssn"), "{msg}");
    // Listings show only what is granted.
    let out = rows(
        &alice,
        "SELECT table_schema, table_name FROM information_schema.tables \
         WHERE table_catalog = 'strata' ORDER BY 1, 2",
    )
    .await;
    assert!(
        out.contains("orders") && out.contains("big_orders") && out.contains("people"),
        "{out}"
    );
    // A stranger sees nothing, and cannot tell a missing table from a forbidden one.
    let bob = engine
        .session_for(principal("bob", &[], None), policy())
        .await
        .unwrap();
    let forbidden = denied(&bob, "SELECT * FROM marts.orders").await;
    let missing = denied(&bob, "SELECT * FROM marts.nope").await;
    assert!(
        forbidden.contains("does not exist or is not granted"),
        "{forbidden}"
    );
    assert!(
        missing.contains("does not exist or is not granted"),
        "{missing}"
    );
    let out = rows(
        &bob,
        "SELECT count(*) AS n FROM information_schema.tables \
         WHERE table_catalog = 'strata' AND table_schema <> 'information_schema'",
    )
    .await;
    assert!(out.contains("| 0 |"), "{out}");
    // Files on the server are not reachable.
    let path = dir.path().join("f.csv");
    std::fs::write(&path, "a\n1\n").unwrap();
    assert!(
        alice
            .sql(&format!("SELECT * FROM '{}'", path.display()))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_role_cannot_write_however_the_sql_is_spelled() {
    let dir = tempfile::tempdir().unwrap();
    let engine = setup(dir.path()).await;
    let alice = engine
        .session_for(principal("alice", &["analyst"], Some("EU")), policy())
        .await
        .unwrap();
    let out_file = dir.path().join("out.csv");
    for sql in [
        "INSERT INTO marts.orders VALUES (9, 'x@y.z', '0', 'EU', 1)".to_string(),
        "insert into MARTS.ORDERS select * from marts.orders".into(),
        "INSERT OVERWRITE marts.orders SELECT * FROM marts.orders".into(),
        "UPDATE marts.orders SET amount = 0".into(),
        "DELETE FROM marts.orders".into(),
        "/* comment */ DELETE FROM marts.orders WHERE id = 1".into(),
        "TRUNCATE marts.orders".into(),
        "MERGE INTO marts.orders t USING marts.orders s ON t.id = s.id WHEN MATCHED THEN DELETE"
            .into(),
        "DROP TABLE marts.orders".into(),
        "DROP VIEW marts.big_orders".into(),
        "CREATE TABLE marts.copy AS SELECT * FROM marts.orders".into(),
        "CREATE OR REPLACE VIEW marts.big_orders AS SELECT 1 AS x".into(),
        "ALTER TABLE marts.orders ADD COLUMN x INT".into(),
        "CREATE SCHEMA evil".into(),
        "DROP SCHEMA marts CASCADE".into(),
        format!(
            "COPY (SELECT * FROM marts.orders) TO '{}'",
            out_file.display()
        ),
        format!("COPY marts.orders TO '{}'", out_file.display()),
        "EXPLAIN ANALYZE INSERT INTO marts.orders SELECT * FROM marts.orders".into(),
    ] {
        denied(&alice, &sql).await;
    }
    // DataFusion does not run these at all; they must still fail.
    for sql in [
        "WITH s AS (SELECT * FROM marts.orders) INSERT INTO marts.orders SELECT * FROM s",
        "SELECT 1; DELETE FROM marts.orders",
    ] {
        assert!(alice.sql(sql).await.is_err(), "{sql} ran");
    }
    assert!(!out_file.exists());
    // Nothing changed.
    let admin = engine.session().await.unwrap();
    let out = rows(
        &admin,
        "SELECT count(*) AS n, sum(amount) AS s FROM marts.orders",
    )
    .await;
    assert!(out.contains("| 3 | 60 |"), "{out}");
    // CREATE on a namespace allows creating there (and replacing needs ALL).
    alice
        .sql("CREATE TABLE sandbox.mine AS SELECT id, email FROM marts.orders")
        .await
        .unwrap();
    let out = rows(&admin, "SELECT email FROM sandbox.mine ORDER BY 1").await;
    assert!(
        out.contains("a***@example.com") && !out.contains("bob"),
        "masked copy: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_only_grant_inserts_but_does_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let engine = setup(dir.path()).await;
    let loader = engine
        .session_for(principal("etl", &["loader"], None), policy())
        .await
        .unwrap();
    loader
        .sql("INSERT INTO marts.orders VALUES (4, 'dan@example.com', '000.000.000-00', 'EU', 5)")
        .await
        .unwrap();
    denied(&loader, "SELECT * FROM marts.orders").await;
    denied(
        &loader,
        "INSERT INTO marts.orders SELECT * FROM marts.orders",
    )
    .await;
    denied(&loader, "DELETE FROM marts.orders").await;
    let admin = engine.session().await.unwrap();
    let out = rows(&admin, "SELECT count(*) AS n FROM marts.orders").await;
    assert!(out.contains("| 4 |"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_deletes_reach_only_the_rows_the_policies_show() {
    let dir = tempfile::tempdir().unwrap();
    let engine = setup(dir.path()).await;
    let editor = engine
        .session_for(
            principal("eve", &["analyst", "editor"], Some("EU")),
            policy(),
        )
        .await
        .unwrap();
    editor
        .sql("UPDATE marts.orders SET amount = 0")
        .await
        .unwrap();
    editor
        .sql("DELETE FROM marts.orders WHERE id >= 2")
        .await
        .unwrap();
    let admin = engine.session().await.unwrap();
    let out = rows(&admin, "SELECT id, amount FROM marts.orders ORDER BY id").await;
    // EU rows 1 and 3 were updated and 3 deleted; the US row 2 was neither.
    assert!(out.contains("| 1  | 0      |"), "{out}");
    assert!(out.contains("| 2  | 20     |"), "{out}");
    assert!(!out.contains("| 3 "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lookups_apply_row_policies_and_masks() {
    use datafusion::common::{ParamValues, ScalarValue};
    let dir = tempfile::tempdir().unwrap();
    let engine = setup(dir.path()).await;
    let alice = engine
        .session_for(principal("alice", &["analyst"], Some("EU")), policy())
        .await
        .unwrap();
    let sql = "SELECT * FROM marts.orders WHERE id = $1";
    let plan = alice
        .context()
        .state()
        .create_logical_plan(sql)
        .await
        .unwrap();
    let plan = engine.scan_latest_when_run(plan).unwrap();
    let lookup = alice.key_lookup(&plan).expect("a key lookup");
    for id in [1, 2, 3] {
        let params = ParamValues::from(vec![ScalarValue::Int64(Some(id))]);
        let fast = lookup
            .run(Some(&params))
            .await
            .unwrap()
            .expect("read by key");
        let fast = pretty_format_batches(&fast).unwrap().to_string();
        let general = rows(
            &alice,
            &format!("SELECT * FROM marts.orders WHERE id = {id}"),
        )
        .await;
        assert_eq!(fast, general, "id {id}");
        assert!(
            !fast.contains("alice@") && !fast.contains("carol@"),
            "{fast}"
        );
        assert!(!fast.contains("US"), "{fast}");
    }
    let one = ParamValues::from(vec![ScalarValue::Int64(Some(1))]);
    let fast = lookup.run(Some(&one)).await.unwrap().unwrap();
    let fast = pretty_format_batches(&fast).unwrap().to_string();
    assert!(
        fast.contains("a***@example.com") && fast.contains("***.***.***-12"),
        "{fast}"
    );
}
