//! The schema migrations, one directory per dialect, embedded in the binary.
//!
//! This is what `sqlx::migrate!` would generate, without its proc macro (which the
//! workspace's sqlx features leave out): file names, descriptions and checksums follow sqlx's
//! rules, so `_sqlx_migrations` looks the same as with the macro or `sqlx-cli`.
//!
//! To change the schema, add `NNNN_<what>.sql` to **both** `migrations/sqlite/` and
//! `migrations/postgres/` and list it below; the tests check that the lists match the
//! directories and each other. Never edit an applied migration: stores that ran it refuse
//! to open (checksum mismatch).

use std::sync::LazyLock;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// `(file name, contents)` of each file, in order.
type Files = &'static [(&'static str, &'static str)];

macro_rules! embed {
    ($dialect:literal: $($file:literal),+ $(,)?) => {
        &[$(($file, include_str!(concat!("../migrations/", $dialect, "/", $file)))),+]
    };
}

const SQLITE_FILES: Files = embed!(
    "sqlite": "0001_runs.sql", "0002_kv.sql", "0003_schema_changes.sql", "0004_run_bytes.sql", "0005_node_results.sql",
    "0006_column_lineage.sql", "0007_access.sql", "0008_token_scram.sql"
);
const POSTGRES_FILES: Files = embed!(
    "postgres": "0001_runs.sql", "0002_kv.sql", "0003_schema_changes.sql", "0004_run_bytes.sql", "0005_node_results.sql",
    "0006_column_lineage.sql", "0007_access.sql", "0008_token_scram.sql"
);

pub(crate) static SQLITE: LazyLock<Migrator> = LazyLock::new(|| migrator(SQLITE_FILES));
pub(crate) static POSTGRES: LazyLock<Migrator> = LazyLock::new(|| migrator(POSTGRES_FILES));

fn migrator(files: Files) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(name, sql)| migration(name, sql))
            .collect(),
    )
}

/// Parses `NNNN_<description>.sql` as sqlx does.
fn migration(name: &'static str, sql: &'static str) -> Migration {
    let (version, rest) = name
        .split_once('_')
        .expect("embedded migration names have the form NNNN_<what>.sql (checked by tests)");
    let version = version
        .parse()
        .expect("embedded migration names start with a number (checked by tests)");
    let description = rest.trim_end_matches(".sql").replace('_', " ");
    Migration::new(
        version,
        description.into(),
        MigrationType::Simple,
        sql.into_sql_str(),
        sql.starts_with("-- no-transaction"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_listing(dialect: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn names(files: Files) -> Vec<String> {
        files.iter().map(|(name, _)| name.to_string()).collect()
    }

    #[test]
    fn embedded_lists_match_the_directories() {
        assert_eq!(
            names(SQLITE_FILES),
            dir_listing("sqlite"),
            "migrations/sqlite/"
        );
        assert_eq!(
            names(POSTGRES_FILES),
            dir_listing("postgres"),
            "migrations/postgres/"
        );
    }

    #[test]
    fn both_dialects_have_the_same_migrations() {
        assert_eq!(names(SQLITE_FILES), names(POSTGRES_FILES));
    }

    #[test]
    fn versions_increase_and_parse_like_sqlx() {
        for migrator in [&*SQLITE, &*POSTGRES] {
            let versions: Vec<i64> = migrator.iter().map(|m| m.version).collect();
            let expected: Vec<i64> = (1..=versions.len() as i64).collect();
            assert_eq!(versions, expected, "versions are 1, 2, 3, ... without gaps");
        }
        let first = SQLITE.iter().next().unwrap();
        assert_eq!(first.description, "runs");
        assert_eq!(first.migration_type, MigrationType::Simple);
    }
}
