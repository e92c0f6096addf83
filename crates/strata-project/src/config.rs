//! `strata.yml`: the file format (strict, spanned) and the resolved [`Settings`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;
use url::Url;

use crate::{Error, Redactor, Result, STATE_DIR, size::parse_size};

/// The file as written. Every key is optional except `name`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    name: Spanned<String>,
    #[serde(default)]
    lake: Option<Spanned<String>>,
    #[serde(default)]
    lake_options: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    metadata: Option<Spanned<String>>,
    #[serde(default)]
    engine: EngineFile,
    #[serde(default)]
    environments: BTreeMap<String, EnvironmentFile>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct EngineFile {
    #[serde(default)]
    memory_limit: Option<Spanned<String>>,
    #[serde(default)]
    spill_dir: Option<String>,
    #[serde(default)]
    target_partitions: Option<usize>,
    #[serde(default)]
    batch_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentFile {
    #[serde(default)]
    lake: Option<Spanned<String>>,
    #[serde(default)]
    lake_options: Option<BTreeMap<String, Spanned<String>>>,
    #[serde(default)]
    metadata: Option<Spanned<String>>,
    #[serde(default)]
    engine: Option<EngineFile>,
}

/// Validated settings for one environment, with paths made absolute and secrets resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The project's name.
    pub name: String,
    /// The selected environment, if any.
    pub environment: Option<String>,
    /// Where the lake lives.
    pub lake: LakeSettings,
    /// Where the metadata store lives.
    pub metadata: MetadataSettings,
    /// Query engine limits.
    pub engine: EngineSettings,
}

/// The lake location.
#[derive(Debug, Clone)]
pub struct LakeSettings {
    /// `file:///abs/path/` or `s3://bucket/prefix/` (always ends with `/`).
    pub url: Url,
    /// Object-store options (credentials, endpoint, region), secrets already resolved.
    pub options: BTreeMap<String, String>,
}

/// The metadata store location.
#[derive(Debug, Clone)]
pub struct MetadataSettings {
    /// `sqlite:///abs/path/strata.db` or a `postgres://` URL.
    pub url: String,
}

/// Engine settings; see the `engine:` block of `strata.yml`.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Memory the engine may use before it spills to disk (bytes). `None`: no limit.
    pub memory_limit: Option<u64>,
    /// Where spill files go.
    pub spill_dir: PathBuf,
    /// Parallelism of plans. Defaults to `max(4, cores)`: on small machines more partitions
    /// than cores keeps both cores busy through joins and aggregations.
    pub target_partitions: usize,
    /// Rows per batch.
    pub batch_size: usize,
}

struct Ctx<'a> {
    path: &'a Path,
    root: &'a Path,
    redactor: &'a Redactor,
}

impl Ctx<'_> {
    fn err<T>(&self, at: Option<&serde_saphyr::Location>, message: impl Into<String>) -> Result<T> {
        Err(Error::Invalid {
            path: self.path.to_path_buf(),
            line: at.map(|l| l.line()).unwrap_or(0),
            column: at.map(|l| l.column()).unwrap_or(0),
            message: message.into(),
        })
    }

    fn interpolate(&self, s: &Spanned<String>) -> Result<String> {
        interpolate_value(self.path, s, self.redactor)
    }

    fn rel_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            crate::normalize(p)
        } else {
            crate::normalize(&self.root.join(p))
        }
    }

    fn lake_url(&self, s: &Spanned<String>) -> Result<Url> {
        let raw = self.interpolate(s)?;
        let shown = self.redactor.redact(&raw);
        let url = if let Some(rest) = raw.strip_prefix("file://") {
            dir_url(&self.rel_path(rest))
        } else if raw.contains("://") {
            let mut url = Url::parse(&raw).or_else(|e| {
                self.err(
                    Some(&s.referenced),
                    format!("`{shown}` is not a valid URL: {e}"),
                )
            })?;
            match url.scheme() {
                "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "memory" => {}
                other => {
                    return self.err(
                        Some(&s.referenced),
                        format!(
                            "lake URL scheme `{other}` is not supported; use a local path, `file:///abs/path`, `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`"
                        ),
                    );
                }
            }
            if url.scheme() != "memory" && url.host_str().is_none_or(str::is_empty) {
                return self.err(
                    Some(&s.referenced),
                    format!(
                        "lake URL `{shown}` has no bucket; write it as `{}://<bucket>/<prefix>`",
                        url.scheme()
                    ),
                );
            }
            if !url.path().ends_with('/') {
                let p = format!("{}/", url.path());
                url.set_path(&p);
            }
            url
        } else {
            dir_url(&self.rel_path(&raw))
        };
        Ok(url)
    }

    fn metadata_url(&self, s: &Spanned<String>) -> Result<String> {
        let raw = self.interpolate(s)?;
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(raw);
        }
        let path = raw.strip_prefix("sqlite://").unwrap_or(&raw);
        if path.contains("://") {
            return self.err(
                Some(&s.referenced),
                format!(
                    "metadata store `{}` is not supported; use `sqlite://<path>` (default `.strata/strata.db`) or `postgres://user@host/db`",
                    self.redactor.redact(&raw)
                ),
            );
        }
        Ok(format!("sqlite://{}", self.rel_path(path).display()))
    }

    fn engine(&self, file: &EngineFile, base: Option<EngineSettings>) -> Result<EngineSettings> {
        let mut e = base.unwrap_or_else(|| EngineSettings {
            memory_limit: None,
            spill_dir: self.root.join(STATE_DIR).join("spill"),
            target_partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(4),
            batch_size: 8192,
        });
        if let Some(m) = &file.memory_limit {
            let v = m.value.trim();
            e.memory_limit =
                if v.eq_ignore_ascii_case("none") || v.eq_ignore_ascii_case("unlimited") {
                    None
                } else {
                    let bytes = parse_size(v).or_else(|msg| {
                        self.err(Some(&m.referenced), format!("engine.memory_limit: {msg}"))
                    })?;
                    if bytes < (16 << 20) {
                        return self.err(
                            Some(&m.referenced),
                            "engine.memory_limit must be at least 16MB",
                        );
                    }
                    Some(bytes)
                };
        }
        if let Some(d) = &file.spill_dir {
            e.spill_dir = self.rel_path(d);
        }
        if let Some(t) = file.target_partitions {
            if t == 0 {
                return self.err(None, "engine.target_partitions must be at least 1");
            }
            e.target_partitions = t;
        }
        if let Some(b) = file.batch_size {
            if b == 0 {
                return self.err(None, "engine.batch_size must be at least 1");
            }
            e.batch_size = b;
        }
        Ok(e)
    }

    fn options(&self, m: &BTreeMap<String, Spanned<String>>) -> Result<BTreeMap<String, String>> {
        m.iter()
            .map(|(k, v)| Ok((k.clone(), self.interpolate(v)?)))
            .collect()
    }
}

/// Resolves `${env:VAR}` references in a value of `path`; every resolved value is a secret
/// and is registered with `redactor`.
pub(crate) fn interpolate_value(
    path: &Path,
    s: &Spanned<String>,
    redactor: &Redactor,
) -> Result<String> {
    let fail = |message: String| Error::Invalid {
        path: path.to_path_buf(),
        line: s.referenced.line(),
        column: s.referenced.column(),
        message,
    };
    let mut out = String::new();
    let mut rest = s.value.as_str();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(fail(
                "unclosed `${`: write secrets as `${env:VARIABLE}`".into(),
            ));
        };
        let inner = &after[..end];
        let Some(var) = inner.strip_prefix("env:") else {
            return Err(fail(format!(
                "`${{{inner}}}` is not supported: write `${{env:VARIABLE}}`"
            )));
        };
        match std::env::var(var) {
            Ok(v) => {
                redactor.add(v.clone());
                out.push_str(&v);
            }
            Err(_) => {
                return Err(fail(format!(
                    "environment variable `{var}` is not set (referenced as `${{env:{var}}}`)"
                )));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn dir_url(p: &Path) -> Url {
    Url::from_directory_path(p).expect("project paths are absolute after normalisation")
}

pub(crate) fn syntax_error(path: &Path, e: serde_saphyr::Error) -> Error {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // The rendered message repeats the location and a snippet; keep the first line, which
    // says what is wrong.
    let rendered = e.to_string();
    let message = rendered
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .trim()
        .to_string();
    Error::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// The `name:` of a `dbt_project.yml` (other keys are read by the modeling layer).
pub(crate) fn dbt_project_name(path: &Path, text: &str) -> Result<String> {
    #[derive(Deserialize)]
    struct DbtName {
        name: Spanned<String>,
    }
    let file: DbtName = serde_saphyr::from_str(text).map_err(|e| syntax_error(path, e))?;
    if let Err(e) = strata_types::validate_identifier(&file.name.value) {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            line: file.name.referenced.line(),
            column: file.name.referenced.column(),
            message: format!("name: {e}"),
        });
    }
    Ok(file.name.value)
}

pub(crate) fn parse(
    path: &Path,
    root: &Path,
    text: &str,
    env: Option<&str>,
    redactor: &Redactor,
) -> Result<Settings> {
    let file: ProjectFile = serde_saphyr::from_str(text).map_err(|e| syntax_error(path, e))?;
    let ctx = Ctx {
        path,
        root,
        redactor,
    };
    if let Err(e) = strata_types::validate_identifier(&file.name.value) {
        return ctx.err(Some(&file.name.referenced), format!("name: {e}"));
    }

    let mut lake_spec = file.lake.as_ref();
    let mut lake_options = &file.lake_options;
    let mut meta_spec = file.metadata.as_ref();
    let mut engine = ctx.engine(&file.engine, None)?;

    let environment = match env {
        None => None,
        Some(name) => {
            let Some(over) = file.environments.get(name) else {
                let known = if file.environments.is_empty() {
                    "none (add an `environments:` block)".to_string()
                } else {
                    file.environments
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(Error::UnknownEnvironment {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                    known,
                });
            };
            if over.lake.is_some() {
                lake_spec = over.lake.as_ref();
            }
            if let Some(o) = &over.lake_options {
                lake_options = o;
            }
            if over.metadata.is_some() {
                meta_spec = over.metadata.as_ref();
            }
            if let Some(e) = &over.engine {
                engine = ctx.engine(e, Some(engine))?;
            }
            Some(name.to_string())
        }
    };

    let lake_url = match lake_spec {
        Some(s) => ctx.lake_url(s)?,
        None => dir_url(&root.join(STATE_DIR).join("lake")),
    };
    let metadata_url = match meta_spec {
        Some(s) => ctx.metadata_url(s)?,
        None => format!(
            "sqlite://{}",
            root.join(STATE_DIR).join("strata.db").display()
        ),
    };
    Ok(Settings {
        name: file.name.value.clone(),
        environment,
        lake: LakeSettings {
            url: lake_url,
            options: ctx.options(lake_options)?,
        },
        metadata: MetadataSettings { url: metadata_url },
        engine,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: Option<&str>) -> Result<Settings> {
        parse(
            Path::new("/p/strata.yml"),
            Path::new("/p"),
            text,
            env,
            &Redactor::new(),
        )
    }

    #[test]
    fn defaults_live_under_dot_strata() {
        let s = load("name: shop\n", None).unwrap();
        assert_eq!(s.lake.url.as_str(), "file:///p/.strata/lake/");
        assert_eq!(s.metadata.url, "sqlite:///p/.strata/strata.db");
        assert_eq!(s.engine.spill_dir, Path::new("/p/.strata/spill"));
        assert!(s.engine.target_partitions >= 4);
        assert_eq!(s.engine.memory_limit, None);
    }

    #[test]
    fn environments_override() {
        let text = "name: shop\nlake: lake\nengine:\n  memory_limit: 1GB\nenvironments:\n  prod:\n    lake: s3://bucket/prefix\n    lake_options:\n      aws_region: eu-west-1\n    metadata: postgres://u@h/db\n    engine:\n      target_partitions: 8\n";
        let dev = load(text, None).unwrap();
        assert_eq!(dev.lake.url.as_str(), "file:///p/lake/");
        let prod = load(text, Some("prod")).unwrap();
        assert_eq!(prod.lake.url.as_str(), "s3://bucket/prefix/");
        assert_eq!(prod.lake.options["aws_region"], "eu-west-1");
        assert_eq!(prod.metadata.url, "postgres://u@h/db");
        assert_eq!(prod.engine.target_partitions, 8);
        assert_eq!(prod.engine.memory_limit, Some(1 << 30));
        let err = load(text, Some("staging")).unwrap_err().to_string();
        assert!(
            err.contains("environment `staging` is not defined"),
            "{err}"
        );
        assert!(err.contains("prod"), "{err}");
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let err = load("name: shop\nengine:\n  memory_limt: 1GB\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/p/strata.yml:3:"), "{err}");
        assert!(err.contains("memory_limt"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let err = load("name: shop\nengine:\n  target_partitions: many\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/p/strata.yml:3:"), "{err}");
    }

    #[test]
    fn lake_without_bucket() {
        let err = load("name: shop\nlake: s3://\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/p/strata.yml:2:7"), "{err}");
        assert!(err.contains("has no bucket"), "{err}");
        let err = load("name: shop\nlake: ftp://x/y\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("scheme `ftp` is not supported"), "{err}");
    }

    #[test]
    fn bad_memory_limit() {
        let err = load("name: shop\nengine:\n  memory_limit: lots\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/p/strata.yml:3:17"), "{err}");
    }

    #[test]
    fn secrets_are_interpolated_and_redacted() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("STRATA_TEST_PG_PASSWORD", "pa55word") };
        let r = Redactor::new();
        let s = parse(
            Path::new("/p/strata.yml"),
            Path::new("/p"),
            "name: shop\nmetadata: postgres://u:${env:STRATA_TEST_PG_PASSWORD}@h/db\n",
            None,
            &r,
        )
        .unwrap();
        assert_eq!(s.metadata.url, "postgres://u:pa55word@h/db");
        assert_eq!(
            r.redact(&format!("failed: {}", s.metadata.url)),
            "failed: postgres://u:***@h/db"
        );
        assert_eq!(r.redact("pa55word"), "***");
        let err = load(
            "name: shop\nmetadata: ${env:STRATA_SURELY_UNSET_VAR}\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`STRATA_SURELY_UNSET_VAR` is not set"),
            "{err}"
        );
        assert!(err.starts_with("/p/strata.yml:2:"), "{err}");
    }

    #[test]
    fn invalid_name() {
        let err = load("name: My Shop\n", None).unwrap_err().to_string();
        assert!(err.contains("not a valid name"), "{err}");
    }
}
