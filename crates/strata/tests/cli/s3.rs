//! The same project on object storage: the lake in an S3 bucket (a moto server on
//! loopback, started by scripts/test.sh), configured only through strata.yml.

use crate::{project, stderr, strata};

#[test]
fn project_with_an_s3_lake() {
    let Ok(endpoint) = std::env::var("STRATA_IT_S3_ENDPOINT") else {
        eprintln!("SKIP project_with_an_s3_lake: STRATA_IT_S3_ENDPOINT is not set");
        return;
    };
    let bucket = format!("strata-cli-{}", std::process::id());
    let put = std::process::Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")])
        .status()
        .expect("curl runs");
    assert!(put.success(), "could not create bucket {bucket}");

    let (_tmp, dir) = project();
    std::fs::write(
        dir.join("strata.yml"),
        format!(
            "name: s3_project
lake: s3://{bucket}/warehouse
lake_options:
  aws_endpoint: {endpoint}
  aws_allow_http: \"true\"
  aws_region: us-east-1
  aws_access_key_id: testing
  aws_secret_access_key: \"${{env:STRATA_TEST_S3_SECRET}}\"
"
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(crate::strata_bin())
            .args(args)
            .current_dir(&dir)
            .env("STRATA_TEST_S3_SECRET", "testing")
            .env("STRATA_LOG", "error")
            .output()
            .unwrap();
        assert!(o.status.success(), "strata {args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(&[
        "sql",
        "create table raw.orders as select * from (values (1, 'open'), (2, 'paid')) as t(id, status)",
    ]);
    run(&[
        "sql",
        "update raw.orders set status = 'paid' where id = 1; insert into raw.orders values (3, 'open')",
    ]);
    run(&[
        "sql",
        "create view marts.paid as select id from raw.orders where status = 'paid'",
    ]);
    assert_eq!(
        run(&["sql", "select id from marts.paid order by id", "-f", "csv"]),
        "id\n1\n2\n"
    );
    assert_eq!(
        run(&[
            "sql",
            "select count(*) as n from raw.orders version as of 0",
            "-f",
            "csv"
        ]),
        "n\n2\n"
    );
    let tables = run(&["tables", "--json"]);
    assert!(
        tables.contains("raw.orders") && tables.contains("marts.paid"),
        "{tables}"
    );
    // Nothing was written locally.
    assert!(!dir.join(".strata/lake/raw").exists());
    // Without the secret the project does not load, and says which variable is missing.
    let o = strata(&dir, &["tables"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("STRATA_TEST_S3_SECRET"),
        "{}",
        stderr(&o)
    );
}
