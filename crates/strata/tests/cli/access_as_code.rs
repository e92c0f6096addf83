//! `access.yml` with `strata access plan|apply|export`: the file's roles, grants, row
//! policies and masks become the live state a served user sees.

use crate::serve::{PASSWORD, ok_env, psql_ok, serve};
use crate::{ok, project, stderr, strata};

const ACCESS: &str = r#"
roles:
  analysts:
    members: [alice]
users:
  alice:
    attributes: {region: EU}
grants:
  - privilege: select
    on: marts
    to: analysts
row_policies:
  - table: marts.orders
    name: own_region
    using: region = current_user_attribute('region')
    to: analysts
masks:
  - column: marts.orders.email
    mask: email
"#;

#[test]
fn access_yml_is_planned_applied_served_and_exported() {
    let (_tmp, dir) = project();
    ok(
        &dir,
        &[
            "sql",
            "CREATE TABLE marts.orders AS SELECT * FROM (VALUES \
               (1, 'alice@example.com', 'EU', 10), (2, 'bob@example.com', 'US', 20)) AS v(id, email, region, amount)",
        ],
    );
    ok_env(
        &dir,
        &["users", "add", "alice", "--password-env", "PW"],
        &[("PW", PASSWORD)],
    );
    // A role the file does not declare is removed by apply.
    ok(&dir, &["roles", "add", "stale"]);

    let o = strata(&dir, &["access", "plan"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no access.yml"), "{}", stderr(&o));

    std::fs::write(dir.join("access.yml"), ACCESS).unwrap();
    let plan = ok(&dir, &["access", "plan"]);
    for line in [
        "+ role analysts",
        "+ member alice of role analysts",
        "~ attributes of alice: region=EU",
        "+ grant SELECT on namespace marts to analysts",
        "+ row policy own_region on marts.orders for analysts",
        "+ mask email on marts.orders.email",
        "- role stale",
        "Plan: 5 to add, 1 to change, 1 to remove.",
    ] {
        assert!(plan.contains(line), "missing `{line}` in:\n{plan}");
    }
    // Planning changes nothing.
    assert!(ok(&dir, &["--json", "roles", "list"]).contains("stale"));

    let applied = ok(&dir, &["access", "apply"]);
    assert!(
        applied.contains("Applied: 5 to add, 1 to change, 1 to remove."),
        "{applied}"
    );
    assert!(ok(&dir, &["access", "plan"]).contains("nothing to change"));

    // What alice sees over the wire is what the file says.
    {
        let s = serve(&dir);
        let out = psql_ok(
            s.port,
            "alice",
            PASSWORD,
            "SELECT id, email FROM marts.orders",
        );
        assert_eq!(out.trim(), "1|a***@example.com");
    }

    // Edits show as changes and removals.
    let edited = ACCESS
        .replace("region = current_user_attribute('region')", "amount > 5")
        .replace(
            "masks:\n  - column: marts.orders.email\n    mask: email\n",
            "masks: []\n",
        );
    std::fs::write(dir.join("access.yml"), &edited).unwrap();
    let plan = ok(&dir, &["--json", "access", "plan"]);
    let v: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let changes: Vec<String> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["change"].as_str().unwrap(),
                c["what"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            "~ row policy own_region on marts.orders for analysts: amount > 5",
            "- mask email on marts.orders.email",
        ]
    );
    ok(&dir, &["access", "apply"]);

    // Export writes a file that plans to nothing.
    let exported = ok(&dir, &["access", "export"]);
    assert!(exported.contains("own_region"), "{exported}");
    std::fs::write(dir.join("access.yml"), &exported).unwrap();
    assert!(
        ok(&dir, &["access", "plan"]).contains("nothing to change"),
        "{exported}"
    );

    // Mistakes name the file and the entry.
    std::fs::write(
        dir.join("access.yml"),
        "grants:\n  - privilege: select\n    on: marts\n    too: analysts\n",
    )
    .unwrap();
    let o = strata(&dir, &["access", "plan"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("access.yml:"), "{}", stderr(&o));
    std::fs::write(
        dir.join("access.yml"),
        "masks:\n  - column: marts.orders.email\n    mask: scramble\n",
    )
    .unwrap();
    let o = strata(&dir, &["access", "apply"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("masks[0]"), "{}", stderr(&o));
    // Nothing was applied from the bad file: the mask list is still empty.
    assert!(!ok(&dir, &["policies", "list"]).contains("scramble"));
}
