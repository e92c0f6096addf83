//! `strata init`: scaffolds a new project directory.

use std::path::{Path, PathBuf};

use crate::{Error, PROJECT_FILE, Result};

/// What to scaffold.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The project's name; defaults to the directory's name, made a valid identifier.
    pub name: Option<String>,
}

/// Creates `dir` (if needed) with `strata.yml`, `sources/`, `models/`, `.gitignore` and a
/// README. Refuses to touch a directory that already holds a `strata.yml`. Returns the
/// files written.
pub fn init_project(dir: &Path, opts: &InitOptions) -> Result<Vec<PathBuf>> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    if dir.join(PROJECT_FILE).exists() {
        return Err(Error::AlreadyExists(dir.to_path_buf()));
    }
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let name = match &opts.name {
        Some(n) => {
            strata_types::validate_identifier(n).map_err(|e| Error::Invalid {
                path: dir.join(PROJECT_FILE),
                line: 0,
                column: 0,
                message: format!("project name: {e}"),
            })?;
            n.clone()
        }
        None => identifier_from(
            &crate::absolute(dir)
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "strata_project".into()),
        ),
    };
    let files: Vec<(PathBuf, String)> = vec![
        (dir.join(PROJECT_FILE), project_yml(&name)),
        (
            dir.join(".gitignore"),
            "# Local state: the embedded lake, metadata store, spill files and shell history.\n.strata/\ntarget/\n".into(),
        ),
        (dir.join("README.md"), readme(&name)),
        (
            dir.join("sources").join("README.md"),
            "# Sources\n\nOne YAML file per source system (`postgres.yml`, `shop_api.yml`, ...).\nEach declares a connection and its streams; `strata ingest` loads them into the\nlake's `raw` namespace.\n".into(),
        ),
        (
            dir.join("models").join("README.md"),
            "# Models\n\nSQL models (dbt-compatible): `staging/` cleans raw tables, `marts/` holds the\ntables people query.\n".into(),
        ),
    ];
    let mut written = Vec::new();
    for (path, content) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        if path.exists() {
            continue; // never overwrite the user's files
        }
        std::fs::write(&path, content).map_err(write_err(&path))?;
        written.push(path);
    }
    Ok(written)
}

fn identifier_from(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out.truncate(63);
    out
}

fn project_yml(name: &str) -> String {
    format!(
        r#"# Strata project. Reference: `strata --help`; every key below is optional except `name`.
name: {name}

# Where tables live. A local folder (default) or object storage:
#   lake: s3://my-bucket/warehouse
#   lake_options: {{ aws_region: eu-west-1, aws_access_key_id: "${{env:AWS_ACCESS_KEY_ID}}" }}
lake: .strata/lake

# Runs, state, users and dashboards. SQLite by default; PostgreSQL to share it:
#   metadata: postgres://strata:${{env:STRATA_META_PASSWORD}}@db.internal/strata
metadata: sqlite://.strata/strata.db

engine:
  # Past this, sorts, joins and aggregations spill to disk instead of failing.
  memory_limit: 2GB
  spill_dir: .strata/spill
  # target_partitions: 4

# Select with `--env prod` (or STRATA_ENV=prod); each key overrides the one above.
environments:
  prod:
    engine:
      memory_limit: 8GB
"#
    )
}

fn readme(name: &str) -> String {
    format!(
        "# {name}\n\nA Strata project: sources, models and everything else about this data platform, as code.\n\n```sh\nstrata sql \"create table raw.hello as select 1 as x\"   # write a Delta table\nstrata sql \"select * from raw.hello\"                  # query it\nstrata tables                                        # list what the lake holds\nstrata shell                                         # interactive SQL\n```\n\nLocal state (the embedded lake and metadata store) lives in `.strata/`, which git ignores.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffolds_a_loadable_project() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("My-Shop");
        let written = init_project(&dir, &InitOptions { name: None }).unwrap();
        assert_eq!(written.len(), 5);
        let p = crate::Project::load(&dir, None).unwrap();
        assert_eq!(p.settings.name, "my_shop");
        assert_eq!(p.settings.engine.memory_limit, Some(2 << 30));
        assert!(
            p.settings
                .lake
                .url
                .as_str()
                .ends_with("/My-Shop/.strata/lake/")
        );
        let prod = crate::Project::load(&dir, Some("prod")).unwrap();
        assert_eq!(prod.settings.engine.memory_limit, Some(8 << 30));
        let gi = std::fs::read_to_string(dir.join(".gitignore")).unwrap();
        assert!(gi.contains(".strata/"));
        assert!(matches!(
            init_project(&dir, &InitOptions { name: None }),
            Err(Error::AlreadyExists(_))
        ));
        // Discovery walks up from a subdirectory, like git.
        let found = crate::Project::discover(&dir.join("models"), None).unwrap();
        assert_eq!(found.root, dir);
    }
}
