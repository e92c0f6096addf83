//! `strata sources …` and `strata ingest`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use strata_project::{SourceDef, StreamDef, SyncMode, load_sources};
use strata_sources::ingest::{IngestOptions, Progress, StreamReport, run_stream};

use crate::Ctx;

/// Sub-commands of `strata sources`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SourcesCommand {
    /// List the project's sources and their streams.
    List,
    /// Connect to a source and say plainly what is wrong, if anything.
    Check {
        /// Source name (the file name in sources/ without .yml).
        source: String,
    },
    /// List the tables a source offers, with columns and keys, and print a starter
    /// `streams:` block for its YAML file.
    Discover {
        /// Source name.
        source: String,
    },
    /// Ingestion runs and their outcome, per stream.
    History {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

fn find<'a>(sources: &'a [SourceDef], name: &str) -> Result<&'a SourceDef> {
    sources.iter().find(|s| s.name == name).ok_or_else(|| {
        let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        anyhow::anyhow!(
            "no source `{name}` in sources/; {}",
            if known.is_empty() {
                "the project has none yet (add sources/<name>.yml)".to_string()
            } else {
                format!("known sources: {}", known.join(", "))
            }
        )
    })
}

pub(crate) async fn run(ctx: &Ctx, cmd: &SourcesCommand) -> Result<()> {
    let sources = load_sources(&ctx.project.root, &ctx.project.redactor)?;
    match cmd {
        SourcesCommand::List => {
            if sources.is_empty() {
                println!(
                    "No sources yet. Add one as sources/<name>.yml, for example:\n\n{}",
                    EXAMPLE
                );
                return Ok(());
            }
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
                .set_header([
                    "source",
                    "type",
                    "stream",
                    "mode",
                    "destination",
                    "cursor",
                    "key",
                    "from",
                ]);
            for s in &sources {
                // Cloned streams come from the source's tables: discovered now.
                let (s, clone_error) = match expand(s).await {
                    Ok(e) => (e, None),
                    Err(e) => (s.clone(), Some(ctx.project.redactor.redact(&e.to_string()))),
                };
                for st in &s.streams {
                    t.add_row([
                        s.name.clone(),
                        s.kind.clone(),
                        st.name.clone(),
                        mode_name(st.mode).into(),
                        st.destination.to_string(),
                        st.cursor.clone().unwrap_or_default(),
                        st.primary_key.join(", "),
                        if st.cloned { "clone" } else { "file" }.into(),
                    ]);
                }
                if let Some(e) = clone_error {
                    t.add_row([
                        s.name.clone(),
                        s.kind.clone(),
                        format!("(clone: cannot list the tables: {e})"),
                    ]);
                } else if s.streams.is_empty() && s.clone {
                    t.add_row([
                        s.name.clone(),
                        s.kind.clone(),
                        "(clone: no tables to copy in its schemas)".into(),
                    ]);
                } else if s.streams.is_empty() {
                    t.add_row([
                        s.name.clone(),
                        s.kind.clone(),
                        "(no streams: see `strata sources discover`)".into(),
                    ]);
                }
            }
            println!("{t}");
        }
        SourcesCommand::Check { source } => {
            let def = find(&sources, source)?;
            let started = Instant::now();
            strata_sources::connect(def)?.check().await?;
            println!("{}: connected in {:.0?}", def.name, started.elapsed());
        }
        SourcesCommand::Discover { source } => {
            let def = find(&sources, source)?;
            let found = strata_sources::connect(def)?.discover().await?;
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
                .set_header(["table", "columns", "primary key"]);
            let mut yaml = String::from("streams:\n");
            for d in &found {
                let cols: Vec<String> = d
                    .schema
                    .fields()
                    .iter()
                    .zip(&d.source_types)
                    .map(|(f, st)| format!("{} {st}", f.name()))
                    .collect();
                t.add_row([d.table.clone(), cols.join(", "), d.primary_key.join(", ")]);
                yaml.push_str(&format!("  - table: {}\n", d.table));
                let cursor = strata_sources::clone::change_cursor(d);
                match (cursor, d.primary_key.is_empty()) {
                    (Some(c), false) => yaml.push_str(&format!(
                        "    mode: incremental\n    cursor: {c}\n    primary_key: [{}]\n",
                        d.primary_key.join(", ")
                    )),
                    (_, false) => yaml.push_str(&format!(
                        "    primary_key: [{}]\n",
                        d.primary_key.join(", ")
                    )),
                    _ => {}
                }
            }
            println!("{t}");
            if matches!(def.kind.as_str(), "postgres" | "mysql" | "sqlite") {
                println!(
                    "\nStarter streams for {} (paste into it and adjust):\n\n{yaml}",
                    def.file.display()
                );
            } else {
                println!(
                    "\nThe columns each stream declared in {} loads as now.",
                    def.file.display()
                );
            }
        }
        SourcesCommand::History { limit } => {
            let Some(meta) = &ctx.meta else {
                bail!("the metadata store is unavailable");
            };
            let runs = meta
                .runs(
                    strata_meta::RunFilter::new()
                        .command("ingest")
                        .limit(*limit),
                )
                .await?;
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
                .set_header([
                    "started", "stream", "status", "rows", "bytes", "duration", "detail",
                ]);
            for r in runs {
                t.add_row([
                    r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    r.args.clone(),
                    r.status.to_string(),
                    r.rows.map(|n| n.to_string()).unwrap_or_default(),
                    r.bytes
                        .map(|b| crate::output::human_bytes(b.max(0) as u64))
                        .unwrap_or_default(),
                    r.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default(),
                    r.error.unwrap_or_default().chars().take(80).collect(),
                ]);
            }
            println!("{t}");
            let changes = meta.schema_changes(None, *limit).await?;
            if !changes.is_empty() {
                let mut t = comfy_table::Table::new();
                t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
                    .set_header(["at", "stream", "column", "change", "from", "to", "action"]);
                for (at, c) in changes {
                    t.add_row([
                        at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        format!("{}.{}", c.source, c.stream),
                        c.column,
                        c.change,
                        c.from_type.unwrap_or_default(),
                        c.to_type.unwrap_or_default(),
                        c.action,
                    ]);
                }
                println!("\nSchema changes:\n{t}");
            }
        }
    }
    Ok(())
}

/// `12,000 / ~50,000 rows (24%)  3.1 MB/s  ETA 9s`; without an estimate, rows and speed.
fn progress_line(rows: u64, expected: u64, mb_per_s: f64, secs: f64) -> String {
    if expected == 0 || rows == 0 {
        return format!("{rows} rows  {mb_per_s:.1} MB/s");
    }
    // Estimates (planner statistics) can be off: never show more than 99% before the end.
    let pct = (rows as f64 / expected as f64 * 100.0).min(99.0);
    let left = expected.saturating_sub(rows) as f64 / (rows as f64 / secs);
    format!("{rows} / ~{expected} rows ({pct:.0}%)  {mb_per_s:.1} MB/s  ETA {left:.0}s")
}

const EXAMPLE: &str = "  # sources/shop.yml
  type: postgres
  url: postgres://app:${env:SHOP_DB_PASSWORD}@db.internal:5432/shop
  streams:
    - table: public.orders
      mode: incremental
      cursor: updated_at
      primary_key: [id]";

/// The source with the streams `clone: true` adds (connects to list its tables).
async fn expand(def: &SourceDef) -> std::result::Result<SourceDef, strata_sources::Error> {
    if !def.clone {
        return Ok(def.clone());
    }
    let src = strata_sources::connect(def)?;
    strata_sources::clone::expand_clone(def, src.as_ref()).await
}

fn mode_name(m: SyncMode) -> &'static str {
    match m {
        SyncMode::FullRefresh => "full_refresh",
        SyncMode::Append => "append",
        SyncMode::Incremental => "incremental",
    }
}

/// `strata ingest [source[.stream] …]`.
pub(crate) async fn ingest(
    ctx: &Ctx,
    selectors: &[String],
    full_refresh: bool,
    parallel: usize,
) -> Result<()> {
    let declared = load_sources(&ctx.project.root, &ctx.project.redactor)?;
    let selected: Vec<(&str, Option<&str>)> = selectors
        .iter()
        .map(|sel| match sel.split_once('.') {
            Some((s, st)) => (s, Some(st)),
            None => (sel.as_str(), None),
        })
        .collect();
    for (src, _) in &selected {
        find(&declared, src)?;
    }
    // Sources with `clone: true` get a stream per table, discovered now; a source that
    // cannot be reached fails here (its declared streams still run).
    let mut sources: Vec<SourceDef> = Vec::new();
    let mut clone_failures: Vec<(String, String)> = Vec::new();
    for def in &declared {
        if !selected.is_empty() && !selected.iter().any(|(s, _)| *s == def.name) {
            continue;
        }
        match expand(def).await {
            Ok(e) => sources.push(e),
            Err(e) => {
                clone_failures.push((
                    format!("{}.(clone)", def.name),
                    ctx.project.redactor.redact(&e.to_string()),
                ));
                sources.push(def.clone());
            }
        }
    }
    let mut work: Vec<(&SourceDef, &StreamDef)> = Vec::new();
    for (src, stream) in selected.iter().copied() {
        let def = find(&sources, src)?;
        match stream {
            Some(st) => {
                let s = def.streams.iter().find(|s| s.name == st).ok_or_else(|| {
                    let failed = clone_failures
                        .iter()
                        .find(|(l, _)| l.starts_with(&format!("{src}.")))
                        .map(|(_, e)| format!(" (its tables could not be listed: {e})"))
                        .unwrap_or_default();
                    anyhow::anyhow!(
                        "source `{src}` has no stream `{st}`; its streams: {}{failed}",
                        def.streams
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
                work.push((def, s));
            }
            None => work.extend(def.streams.iter().map(|s| (def, s))),
        }
    }
    // `shop shop.orders` runs `shop.orders` once.
    let mut seen = std::collections::HashSet::new();
    work.retain(|(d, s)| seen.insert((d.name.clone(), s.name.clone())));
    if selectors.is_empty() {
        work.extend(
            sources
                .iter()
                .flat_map(|d| d.streams.iter().map(move |s| (d, s))),
        );
    }
    if work.is_empty()
        && let Some((label, e)) = clone_failures.first()
    {
        bail!("{label}: {e}");
    }
    if work.is_empty() {
        bail!(
            "nothing to ingest: the project's sources declare no streams (see `strata sources list`)"
        );
    }
    let multi = if ctx.quiet {
        MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
    } else {
        MultiProgress::new()
    };
    let style =
        ProgressStyle::with_template("  {spinner} {prefix:<28} {msg}").expect("valid template");
    let lake = ctx.engine.lake().clone();
    let opts = IngestOptions { full_refresh };
    let started = Instant::now();
    let mut results: Vec<(String, std::result::Result<StreamReport, String>)> =
        futures::stream::iter(work)
            .map(|(def, stream)| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(format!("{}.{}", def.name, stream.name));
                let lake = lake.clone();
                let opts = opts.clone();
                async move {
                    let label = format!("{}.{}", def.name, stream.name);
                    let progress = Arc::new(Progress::default());
                    let run = ctx.meta.as_ref().map(|m| {
                        m.start_run(strata_meta::NewRun {
                            command: "ingest".into(),
                            args: label.clone(),
                            principal: crate::whoami(),
                            environment: ctx.project.settings.environment.clone(),
                        })
                    });
                    let run_id = match run {
                        Some(f) => f.await.ok(),
                        None => None,
                    };
                    let ticker = {
                        let bar = bar.clone();
                        let progress = Arc::clone(&progress);
                        let t0 = Instant::now();
                        tokio::spawn(async move {
                            loop {
                                let rows = progress.rows.load(Ordering::Relaxed);
                                let mb =
                                    progress.bytes.load(Ordering::Relaxed) as f64 / 1_048_576.0;
                                let secs = t0.elapsed().as_secs_f64().max(0.001);
                                let expected = progress.expected_rows.load(Ordering::Relaxed);
                                bar.set_message(progress_line(rows, expected, mb / secs, secs));
                                bar.tick();
                                tokio::time::sleep(Duration::from_millis(150)).await;
                            }
                        })
                    };
                    let result = match strata_sources::connect(def) {
                        Ok(src) => {
                            run_stream(
                                &lake,
                                src.as_ref(),
                                def,
                                stream,
                                &opts,
                                Arc::clone(&progress),
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    };
                    ticker.abort();
                    let message = match &result {
                        Ok(r) => {
                            format!("✓ {} rows → {} ({:.1?})", r.rows, r.destination, r.duration)
                        }
                        Err(e) => format!("✗ {}", ctx.project.redactor.redact(&e.to_string())),
                    };
                    bar.finish_with_message(message);
                    if let (Some(m), Some(id)) = (&ctx.meta, run_id) {
                        let outcome = match &result {
                            Ok(r) => strata_meta::RunOutcome::success(Some(r.rows as i64))
                                .with_bytes(progress.bytes.load(Ordering::Relaxed) as i64),
                            Err(e) => strata_meta::RunOutcome::failed(
                                ctx.project.redactor.redact(&e.to_string()),
                            ),
                        };
                        let _ = m.finish_run(&id, outcome).await;
                    }
                    if let Some(m) = &ctx.meta {
                        let changes = match &result {
                            Ok(r) => r.schema_changes.as_slice(),
                            Err(strata_sources::Error::SchemaChanged { changes, .. }) => {
                                changes.as_slice()
                            }
                            Err(_) => &[],
                        };
                        let log: Vec<strata_meta::SchemaChange> = changes
                            .iter()
                            .map(|c| strata_meta::SchemaChange {
                                run_id,
                                source: def.name.clone(),
                                stream: stream.name.clone(),
                                table: stream.destination.to_string(),
                                column: c.column.clone(),
                                change: c.change.as_str().to_string(),
                                from_type: c.from_type.clone(),
                                to_type: c.to_type.clone(),
                                action: c.action.clone(),
                            })
                            .collect();
                        if let Err(e) = m.record_schema_changes(&log).await {
                            tracing::warn!("could not record schema changes: {e}");
                        }
                    }
                    (
                        label,
                        result.map_err(|e| ctx.project.redactor.redact(&e.to_string())),
                    )
                }
            })
            .buffer_unordered(parallel.max(1))
            .collect()
            .await;
    results.splice(
        0..0,
        clone_failures
            .into_iter()
            .map(|(label, e)| (label, Err(format!("listing the tables to clone: {e}")))),
    );
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header([
            "stream",
            "mode",
            "rows",
            "destination",
            "version",
            "cursor",
            "time",
            "outcome",
        ]);
    let mut failed = Vec::new();
    for (label, r) in &results {
        match r {
            Ok(r) => {
                t.add_row([
                    label.clone(),
                    mode_name(r.mode).into(),
                    r.rows.to_string(),
                    r.destination.to_string(),
                    r.version
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "-".into()),
                    r.cursor.clone().unwrap_or_default(),
                    format!("{:.1?}", r.duration),
                    {
                        let mut notes = vec!["ok".to_string()];
                        if !r.added_columns.is_empty() {
                            notes.push(format!("added columns: {}", r.added_columns.join(", ")));
                        }
                        for c in &r.schema_changes {
                            if c.change != strata_sources::ingest::ChangeKind::Added {
                                notes.push(c.summary());
                            }
                        }
                        if r.rejected > 0 {
                            notes.push(format!(
                                "{} rows rejected → {}__rejected",
                                r.rejected, r.destination
                            ));
                        }
                        notes.join(", ")
                    },
                ]);
            }
            Err(e) => {
                failed.push(label.clone());
                t.add_row([
                    label.clone(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    format!("failed: {e}"),
                ]);
            }
        }
    }
    if ctx.json {
        let rows: Vec<_> = results
            .iter()
            .map(|(label, r)| match r {
                Ok(r) => serde_json::json!({"stream": label, "ok": true, "rows": r.rows, "destination": r.destination.to_string(), "version": r.version, "cursor": r.cursor, "rejected": r.rejected}),
                Err(e) => serde_json::json!({"stream": label, "ok": false, "error": e}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if !ctx.quiet {
        println!("{t}");
        println!("{} streams in {:.1?}", results.len(), started.elapsed());
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} streams failed ({}); the others were committed. Nothing of a failed stream was written",
            failed.len(),
            results.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::progress_line;

    #[test]
    fn progress_shows_an_eta_only_with_an_estimate() {
        assert_eq!(progress_line(500, 0, 1.25, 2.0), "500 rows  1.2 MB/s");
        assert_eq!(
            progress_line(250, 1000, 3.0, 5.0),
            "250 / ~1000 rows (25%)  3.0 MB/s  ETA 15s"
        );
        // A low estimate never reads as done before the end.
        assert!(progress_line(2000, 1000, 3.0, 5.0).contains("(99%)  3.0 MB/s  ETA 0s"));
    }
}
