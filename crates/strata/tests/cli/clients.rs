//! More real clients of the Postgres protocol: SQLAlchemy with pandas, and the PostgreSQL
//! JDBC driver (what DBeaver, Metabase and most JVM tools use): connect, introspect, query,
//! prepared statements, errors.

use std::process::Command;

use crate::serve::{PASSWORD, python, serve, setup};
use crate::{labelled, stderr, stdout};

#[test]
fn sqlalchemy_and_pandas_read_and_introspect_columns() {
    let (_tmp, dir) = setup();
    let s = serve(&dir);
    let script = r#"
import os, sqlalchemy as sa, pandas as pd
url = "postgresql+psycopg://alice:%s@127.0.0.1:%s/strata" % (os.environ["PW"], os.environ["PORT"])
eng = sa.create_engine(url)
with eng.connect() as c:
    df = pd.read_sql("select id, email, amount from marts.orders order by id", c)
    print("frame", df["id"].tolist(), df["email"].tolist(), str(df["amount"].dtype))
    df = pd.read_sql(sa.text("select id from marts.orders where amount > :a"), c, params={"a": 15})
    print("bound", df["id"].tolist())
    try:
        c.execute(sa.text("select * from raw.secret"))
        print("secret readable")
    except sa.exc.DBAPIError as e:
        print("secret", e.orig.sqlstate)
insp = sa.inspect(eng)
print("schemas", [s for s in insp.get_schema_names() if s in ("marts", "raw")])
print("tables", insp.get_table_names(schema="marts"))
print("columns", [(c["name"], str(c["type"]), c["default"]) for c in insp.get_columns("orders", schema="marts")])
print("version", eng.dialect.server_version_info[:2])
print("keys", insp.get_pk_constraint("orders", schema="marts")["constrained_columns"], insp.get_indexes("orders", schema="marts"))
with eng.connect() as c:
    t = pd.read_sql_table("orders", c, schema="marts")
    print("table", sorted(t["id"].tolist()), sorted(t["email"].tolist()), list(t.columns))
"#;
    let o = Command::new(python())
        .args(["-c", script])
        .env("PW", PASSWORD)
        .env("PORT", s.port.to_string())
        .output()
        .expect("python runs");
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let line = |key: &str| labelled(&out, key);
    assert_eq!(
        line("frame"),
        "[1, 3] ['a***@example.com', 'c***@example.com'] int64"
    );
    assert_eq!(line("bound"), "[3]");
    assert_eq!(line("secret"), "42501");
    assert_eq!(line("schemas"), "['marts']");
    assert_eq!(line("tables"), "['orders']");
    assert_eq!(
        line("columns"),
        "[('id', 'BIGINT', None), ('email', 'TEXT', None), ('region', 'TEXT', None), ('amount', 'BIGINT', None)]"
    );
    assert_eq!(line("version"), "(16, 6)");
    // Strata tables have no keys or indexes; reflecting them (as read_sql_table does) works.
    assert_eq!(line("keys"), "[] []");
    assert_eq!(
        line("table"),
        "[1, 3] ['a***@example.com', 'c***@example.com'] ['id', 'email', 'region', 'amount']"
    );
}

const JAVA: &str = r#"
import java.sql.*;
import java.util.*;

public class Check {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", "alice");
        p.setProperty("password", args[1]);
        try (Connection c = DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + args[0] + "/strata", p)) {
            DatabaseMetaData md = c.getMetaData();
            System.out.println("product " + md.getDatabaseProductName() + " " + md.getDatabaseMajorVersion());
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, null, "%", new String[] {"TABLE", "VIEW"})) {
                while (rs.next()) {
                    String schema = rs.getString("TABLE_SCHEM");
                    if (!schema.equals("pg_catalog") && !schema.equals("information_schema")) {
                        tables.add(schema + "." + rs.getString("TABLE_NAME"));
                    }
                }
            }
            System.out.println("tables " + tables);
            List<String> cols = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "marts", "orders", "%")) {
                while (rs.next()) cols.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
            }
            System.out.println("columns " + cols);
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT id, email FROM marts.orders ORDER BY id")) {
                List<String> rows = new ArrayList<>();
                while (rs.next()) rows.add(rs.getLong(1) + "|" + rs.getString(2));
                System.out.println("rows " + rows);
            }
            // Past prepareThreshold (5) the driver switches to a named server-side statement.
            try (PreparedStatement ps = c.prepareStatement("SELECT id FROM marts.orders WHERE amount > ? ORDER BY id")) {
                List<Long> ids = new ArrayList<>();
                for (int i = 0; i < 7; i++) {
                    ps.setInt(1, 15);
                    ids.clear();
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) ids.add(rs.getLong(1));
                    }
                }
                System.out.println("prepared " + ids);
            }
            for (String sql : new String[] {
                    "SELECT * FROM raw.secret",
                    "INSERT INTO marts.orders VALUES (9, 'x@y.z', 'EU', 1)",
                    "SELEC 1"}) {
                try (Statement s = c.createStatement()) {
                    s.execute(sql);
                    System.out.println("error none");
                } catch (SQLException e) {
                    System.out.println("error " + e.getSQLState());
                }
            }
        }
    }
}
"#;

#[test]
fn the_jdbc_driver_connects_introspects_and_queries() {
    let jar = std::env::var("STRATA_JDBC_JAR")
        .unwrap_or_else(|_| "/usr/share/java/postgresql.jar".into());
    assert!(
        std::path::Path::new(&jar).exists(),
        "the PostgreSQL JDBC driver is missing at {jar}: apt-get install libpostgresql-jdbc-java (scripts/services.sh does)"
    );
    let (tmp, dir) = setup();
    let s = serve(&dir);
    let src = tmp.path().join("Check.java");
    std::fs::write(&src, JAVA).unwrap();
    let o = Command::new("java")
        .args(["-cp", &jar])
        .arg(&src)
        .arg(s.port.to_string())
        .arg(PASSWORD)
        .output()
        .expect("java runs");
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "product PostgreSQL 16",
            "tables [marts.orders]",
            "columns [id:int8, email:text, region:text, amount:int8]",
            "rows [1|a***@example.com, 3|c***@example.com]",
            "prepared [3]",
            "error 42501",
            "error 42501",
            "error 42601",
        ],
        "{out}"
    );
}
