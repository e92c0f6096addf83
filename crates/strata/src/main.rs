//! `strata`: the command-line front of the whole platform.

mod access_cmd;
mod access_file;
mod demo;
mod lineage_cmd;
mod models_checks;
mod models_cmd;
mod models_docs;
mod models_errors;
mod output;
mod shell;
mod sources_cmd;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use strata_engine::{Engine, Session, StatementResult};
use strata_lake::{Lake, TableName};
use strata_meta::{MetaStore, NewRun, RunFilter, RunOutcome};
use strata_project::{InitOptions, Project};
use strata_types::{Classify, ErrorClass};

use crate::output::{Format, human_bytes};

const AFTER_HELP: &str = "\
Examples:
  strata init shop && cd shop                  create a project
  strata sql \"create table raw.t as select 1 as x\"
  strata sql \"select * from raw.t\" --format csv
  strata sql \"select * from 'data/*.parquet' limit 10\"   query files in place
  strata tables                                  what the lake holds
  strata describe raw.t                          schema, partitioning, history
  strata demo                                    a ready e-commerce project

Exit codes:
  0 success · 1 user error (bad input, SQL, configuration) · 3 external failure
  (storage, database, network) · 4 internal error · 130 interrupted (nothing committed)";

/// The modern data stack in one binary: load, store, model, serve and govern data.
#[derive(Debug, Parser)]
#[command(name = "strata", version, after_help = AFTER_HELP, propagate_version = true)]
struct Cli {
    /// Project directory (default: found by walking up from the current directory).
    #[arg(long, global = true, env = "STRATA_PROJECT")]
    project: Option<PathBuf>,
    /// Environment from `strata.yml`'s `environments:` block (e.g. dev, prod).
    #[arg(long = "env", global = true, env = "STRATA_ENV")]
    environment: Option<String>,
    /// Print only results and errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Machine-readable JSON output where a command prints a report.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a project: strata.yml, sources/, models/, .gitignore, README.
    #[command(after_help = "Example:\n  strata init shop --name shop")]
    Init {
        /// Directory to create (default: the current directory).
        dir: Option<PathBuf>,
        /// Project name (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Run SQL: queries, DDL, INSERT/UPDATE/DELETE/MERGE, time travel.
    #[command(after_help = "\
Examples:
  strata sql \"select count(*) from raw.orders\"
  strata sql \"select * from raw.orders version as of 3\"           time travel
  strata sql \"select * from raw.orders timestamp as of '2026-01-01'\"
  strata sql \"create table marts.daily as select ...\"
  strata sql \"merge into raw.t using staging.t s on t.id = s.id when matched then update set v = s.v when not matched then insert (id, v) values (s.id, s.v)\"
  strata sql \"select * from raw.orders\" --format parquet --output orders.parquet
  echo \"select 1\" | strata sql -")]
    Sql {
        /// The SQL (several statements separated by `;`), or `-` to read standard input.
        query: String,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Write results to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Rows shown by the table format.
        #[arg(long, default_value_t = 1000)]
        max_rows: usize,
    },
    /// Interactive SQL with history and multi-line statements (end with `;`).
    Shell,
    /// List namespaces and tables with rows, size and last change.
    Tables {
        /// Only this namespace.
        namespace: Option<String>,
    },
    /// Show a table's schema, partitioning and history.
    Describe {
        /// `namespace.table`.
        table: String,
        /// History entries shown.
        #[arg(long, default_value_t = 10)]
        history: usize,
    },
    /// Compact a table's small files into larger ones, or order its rows by key columns.
    #[command(after_help = "\
Examples:
  strata optimize                                   compact every table's small files
  strata optimize marts.orders                      compact one table
  strata optimize marts.orders --zorder-by order_id rewrite it ordered by order_id

Ordering by the columns lookups and range filters use lets file statistics and Parquet page
indexes skip everything but a few pages: the lake's counterpart of an index. With several
columns, rows follow their Z-order curve, which keeps each of them clustered.")]
    Optimize {
        /// `namespace.table`, or none for every table.
        table: Option<String>,
        /// Rewrite the table ordered by these columns (Z-order for several), comma-separated.
        #[arg(long, value_delimiter = ',', requires = "table")]
        zorder_by: Vec<String>,
    },
    /// Delete data files no longer needed by the retained history.
    #[command(after_help = "\
Files younger than the retention (the table's delta.deletedFileRetentionDuration, 7 days by
default) are kept so that time travel and running readers keep working.

Examples:
  strata vacuum raw.orders --dry-run
  strata vacuum raw.orders --retain-hours 24 --force")]
    Vacuum {
        /// `namespace.table`.
        table: String,
        /// Keep files needed by versions younger than this.
        #[arg(long)]
        retain_hours: Option<u64>,
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow a retention shorter than the table's minimum.
        #[arg(long)]
        force: bool,
    },
    /// Sources: list, check connections, discover tables.
    #[command(subcommand)]
    Sources(sources_cmd::SourcesCommand),
    /// Load sources into the lake: every stream, a source, or `source.stream`.
    #[command(after_help = "\
Each stream is one Delta commit holding its rows and its new cursor: a run stopped at any
instant resumes exactly where the last commit ended.

Examples:
  strata ingest                       every stream of every source
  strata ingest shop                  every stream of sources/shop.yml
  strata ingest shop.orders --full-refresh")]
    Ingest {
        /// `source` or `source.stream`; none means all.
        selectors: Vec<String>,
        /// Ignore saved cursors: reload everything and replace the destinations.
        #[arg(long)]
        full_refresh: bool,
        /// Streams loaded at the same time.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
    },
    /// Render the selected dbt models, tests and snapshots into target/compiled/ and write
    /// target/manifest.json (a project holding dbt_project.yml).
    #[command(
        after_help = "Examples:\n  strata compile\n  strata compile --select +orders --vars '{start_date: 2024-01-01}'\n  strata compile --select state:modified+ --state prod-target/"
    )]
    Compile {
        #[command(flatten)]
        args: models_cmd::ModelArgs,
    },
    /// Load the dbt project's seeds (`seeds/*.csv`) into `<schema>.<seed>` tables, each
    /// replaced atomically; column types are inferred unless `column_types` sets them.
    #[command(after_help = "Examples:\n  strata seed\n  strata seed --select raw_customers")]
    Seed {
        #[command(flatten)]
        args: models_cmd::ModelArgs,
    },
    /// Build the selected dbt models in dependency order: views, tables (replaced
    /// atomically), incremental tables and ephemeral models (inlined). A failed model skips
    /// its dependents.
    #[command(
        after_help = "Examples:\n  strata run\n  strata run --select +orders\n  strata run --select marts --exclude tag:slow\n  strata run --full-refresh --select events\n\nExit code 1 when any model failed."
    )]
    Run {
        #[command(flatten)]
        args: models_cmd::ModelArgs,
        /// Rebuild incremental models from scratch instead of adding to them.
        #[arg(long)]
        full_refresh: bool,
    },
    /// Run the selected data tests (generic and singular): a test fails when its query
    /// returns rows.
    #[command(
        after_help = "Examples:\n  strata test\n  strata test --select orders\n  strata test --select test_type:generic\n\nExit code 1 when any test with severity error failed."
    )]
    Test {
        #[command(flatten)]
        args: models_cmd::ModelArgs,
    },
    /// Run the selected dbt snapshots: SCD type 2 tables keeping every version of a row
    /// (`timestamp` or `check` strategy), with `dbt_valid_from`/`dbt_valid_to`.
    #[command(
        after_help = "Examples:\n  strata snapshot\n  strata snapshot --select customers_snapshot\n\nExit code 1 when any snapshot failed."
    )]
    Snapshot {
        #[command(flatten)]
        args: models_cmd::ModelArgs,
    },
    /// Seed, run and test the selected nodes in dependency order; a failing test skips
    /// everything downstream of the model it tests.
    #[command(
        after_help = "Examples:\n  strata build\n  strata build --select +orders\n  strata build --full-refresh\n\nExit code 1 when any node failed."
    )]
    Build {
        #[command(flatten)]
        args: models_cmd::ModelArgs,
        /// Rebuild incremental models from scratch instead of adding to them.
        #[arg(long)]
        full_refresh: bool,
    },
    /// Preview rows of a model (its compiled query with a limit; the model need not be
    /// built) or of an inline query using `ref`/`source`.
    #[command(
        after_help = "Examples:\n  strata show --select customers\n  strata show --select customers --limit 20\n  strata show --inline \"select * from {{ ref('orders') }} where amount > 100\""
    )]
    Show {
        #[command(flatten)]
        args: models_cmd::ModelArgs,
        /// A query to run instead of a model (Jinja: `ref`, `source`, `var`).
        #[arg(long)]
        inline: Option<String>,
        /// Rows shown per model.
        #[arg(long, default_value_t = 5)]
        limit: usize,
    },
    /// dbt documentation artifacts: `strata docs generate`.
    Docs {
        #[command(subcommand)]
        command: models_docs::DocsCommand,
    },
    /// dbt sources of the project: `strata source freshness`.
    Source {
        #[command(subcommand)]
        command: models_checks::SourceCommand,
    },
    /// List the nodes of a dbt project that a selection picks.
    #[command(
        after_help = "Examples:\n  strata ls --select tag:staging\n  strata ls --resource-type model --output path"
    )]
    Ls {
        #[command(flatten)]
        args: models_cmd::ModelArgs,
        /// Only these resource types (model, seed, snapshot, test, source, analysis).
        #[arg(long = "resource-type", num_args = 1..)]
        resource_type: Vec<String>,
        /// What to print for each node.
        #[arg(long, short = 'o', value_enum, default_value = "selector")]
        output: models_cmd::LsOutput,
    },
    /// Column-level lineage of a model (or one column): upstream columns and how each is
    /// used (copied, transformed, aggregated, filtered-by), and downstream model columns.
    #[command(
        after_help = "Examples:\n  strata lineage customers\n  strata lineage customers.lifetime_value --json"
    )]
    Lineage {
        /// `<model>` or `<model>.<column>`.
        target: String,
        #[command(flatten)]
        args: models_cmd::ModelArgs,
    },
    /// The audit log of the served surfaces: every statement and login attempt, with who,
    /// through what, which tables, how it ended.
    #[command(
        after_help = "Examples:\n  strata audit\n  strata audit --user alice --limit 50\n  strata --json audit --surface pgwire"
    )]
    Audit {
        /// Only this user's entries.
        #[arg(long)]
        user: Option<String>,
        /// Only this surface's (pgwire, flight, rest…).
        #[arg(long)]
        surface: Option<String>,
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Recent command runs recorded in the metadata store.
    Runs {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Serve the warehouse: the Postgres wire protocol for psql, drivers and BI tools, and a
    /// REST API for applications, with every session opened for an authenticated user under
    /// its grants, row policies and column masks.
    #[command(after_help = "\
Users log in with their password or an API token (as the password, or as
`Authorization: Bearer <token>` over HTTP). Without TLS, only clients on this machine may
log in; give --tls-cert and --tls-key to serve other hosts.

Examples:
  strata users add alice --password-stdin --attr region=EU
  strata serve
  psql 'postgres://alice@127.0.0.1:6875/strata'
  curl -H \"Authorization: Bearer $TOKEN\" 'http://127.0.0.1:8787/api/v1/tables/marts/orders?status=eq.paid&limit=10'
  curl -H \"Authorization: Bearer $TOKEN\" -H 'Accept: text/csv' -d '{\"sql\": \"select 1\"}' http://127.0.0.1:8787/api/v1/sql
  python -c \"import adbc_driver_flightsql.dbapi as f; c = f.connect('grpc://127.0.0.1:50051', db_kwargs={'username': 'alice', 'password': '...'}); print(c.cursor().execute('select 1').fetch_arrow_table())\"
  strata serve --pg-addr 0.0.0.0:6875 --http-addr 0.0.0.0:8787 --flight-addr 0.0.0.0:50051 --tls-cert server.crt --tls-key server.key")]
    Serve {
        /// Address of the Postgres wire protocol.
        #[arg(long, default_value = strata_server::DEFAULT_PG_ADDR)]
        pg_addr: std::net::SocketAddr,
        /// Address of the HTTP surfaces (REST API, OpenAPI document at /api/v1/openapi.json).
        #[arg(long, default_value = strata_server::DEFAULT_HTTP_ADDR)]
        http_addr: std::net::SocketAddr,
        /// Serve no HTTP.
        #[arg(long)]
        no_http: bool,
        /// Address of Arrow Flight SQL (ADBC, JDBC Flight SQL drivers).
        #[arg(long, default_value = strata_server::DEFAULT_FLIGHT_ADDR)]
        flight_addr: std::net::SocketAddr,
        /// Serve no Flight SQL.
        #[arg(long)]
        no_flight: bool,
        /// TLS certificate chain (PEM).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// REST requests per second per token or user (0: unlimited).
        #[arg(long, default_value_t = 100.0)]
        rate_limit: f64,
        /// Most rows one REST SQL response carries.
        #[arg(long, default_value_t = 1_000_000)]
        max_rows: u64,
        /// Longest a REST statement may run, in seconds.
        #[arg(long, default_value_t = 300)]
        statement_timeout: u64,
    },
    /// Users who may connect: add, list, set passwords and attributes, disable, drop.
    Users {
        #[command(subcommand)]
        command: access_cmd::UsersCommand,
    },
    /// Roles and their members.
    Roles {
        #[command(subcommand)]
        command: access_cmd::RolesCommand,
    },
    /// Privileges on namespaces, tables and columns.
    Grants {
        #[command(subcommand)]
        command: access_cmd::GrantsCommand,
    },
    /// API tokens: usable as passwords, expiring, revocable.
    Tokens {
        #[command(subcommand)]
        command: access_cmd::TokensCommand,
    },
    /// Row policies and column masks.
    Policies {
        #[command(subcommand)]
        command: access_cmd::PoliciesCommand,
    },
    /// Access as code: `access.yml` (roles, grants, row policies, masks) planned against and
    /// applied to the metadata store, or exported from it.
    Access {
        #[command(subcommand)]
        command: access_file::AccessCommand,
    },
    /// Create and load a ready e-commerce project, build its dbt models, then print a short
    /// report.
    #[command(
        after_help = "The demo writes a shop's operational data the way real systems hold it (an application\ndatabase, CSV exports, a JSON catalog), declares them as sources and ingests them. Then it\nwrites a dbt project (staging views, intermediate models, marts with an RFV segmentation of\nthe customers, seeds, a snapshot, tests and docs; files you changed are kept) and builds it\nwith `strata build`.\n\nExamples:\n  strata demo\n  strata demo /tmp/shop --scale 1000000\n  strata demo --postgres postgres://postgres@localhost/test"
    )]
    Demo {
        /// Where to create the project.
        #[arg(default_value = "strata-demo")]
        dir: PathBuf,
        /// Number of orders to generate (customers = orders / 5).
        #[arg(long, default_value_t = 10_000)]
        scale: u64,
        /// Keep the shop's application tables in this PostgreSQL database (schema
        /// `lumen_goods`, replaced) instead of a SQLite file, and ingest from there.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
        /// Do not serve the warehouse at the end (it is served only when the output is a
        /// terminal anyway).
        #[arg(long)]
        no_serve: bool,
    },
}

/// Stack of the thread that plans and drives a command.
const COMMAND_STACK_BYTES: usize = 1 << 30;
/// Stack of the runtime's worker threads (execution, and planning done inside tasks).
const WORKER_STACK_BYTES: usize = 64 << 20;

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,deltalake=error,buoyant_kernel=off")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(WORKER_STACK_BYTES)
        .build()
        .expect("the async runtime starts");
    let redactor = strata_types::Redactor::new();
    // The command is polled on a thread of its own with a large stack: planning recurses
    // through nested views (a model chain 200 views deep) and deep expression trees. The
    // stack is reserved, not committed; pages are touched only as deep as planning goes.
    let command_redactor = redactor.clone();
    let (outcome, runtime) = std::thread::Builder::new()
        .name("strata-command".into())
        .stack_size(COMMAND_STACK_BYTES)
        .spawn(move || {
            let outcome = runtime.block_on(async {
                tokio::select! {
                    r = run(cli, command_redactor) => Some(r),
                    _ = tokio::signal::ctrl_c() => None,
                }
            });
            (outcome, runtime)
        })
        .expect("the command thread starts")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let code = match outcome {
        Some(Ok(())) => 0,
        Some(Err(e)) => {
            let class = classify(&e);
            let mut msg = render_error(&e);
            if class == ErrorClass::Internal {
                msg.push_str(
                    "\n(this is a bug in Strata; please report it with the command that caused it)",
                );
            }
            eprintln!("error: {}", redactor.redact(&msg));
            class.exit_code()
        }
        None => {
            eprintln!(
                "interrupted: the command stopped before committing; every table is as it was"
            );
            strata_types::EXIT_INTERRUPTED
        }
    };
    // Do not wait for background tasks of an interrupted command.
    runtime.shutdown_timeout(Duration::from_millis(200));
    std::process::exit(code);
}

/// The message of an error: context added at the edge, then the typed error's own message
/// (which already says everything its sources would repeat).
fn render_error(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
        let typed = cause.is::<strata_engine::Error>()
            || cause.is::<strata_lake::Error>()
            || cause.is::<strata_project::Error>()
            || cause.is::<strata_meta::Error>()
            || cause.is::<strata_sources::Error>()
            || cause.is::<strata_models::Error>();
        if typed {
            break;
        }
    }
    parts.join(": ")
}

fn classify(e: &anyhow::Error) -> ErrorClass {
    for cause in e.chain() {
        if let Some(x) = cause.downcast_ref::<strata_engine::Error>() {
            return x.class();
        }
        if let Some(x) = cause.downcast_ref::<strata_lake::Error>() {
            return x.class();
        }
        if let Some(x) = cause.downcast_ref::<strata_project::Error>() {
            return x.class();
        }
        if let Some(x) = cause.downcast_ref::<strata_meta::Error>() {
            return x.class();
        }
        if let Some(x) = cause.downcast_ref::<strata_sources::Error>() {
            return x.class();
        }
        if let Some(x) = cause.downcast_ref::<strata_models::Error>() {
            return x.class();
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return ErrorClass::External;
        }
    }
    ErrorClass::User
}

/// Everything a command needs once the project is loaded.
pub(crate) struct Ctx {
    pub(crate) project: Project,
    pub(crate) engine: Engine,
    pub(crate) meta: Option<MetaStore>,
    pub(crate) quiet: bool,
    pub(crate) json: bool,
    /// How each node of the running modeling command ended, recorded with its run.
    pub(crate) node_results: std::sync::Mutex<Vec<strata_meta::NodeResult>>,
    /// Column-level lineage of the models the command built, by model unique id; recorded
    /// with the run.
    pub(crate) lineage: std::sync::Mutex<Vec<(String, Vec<strata_meta::LineageEdge>)>>,
}

impl Ctx {
    async fn load(cli: &Cli, redactor: &strata_types::Redactor) -> Result<Self> {
        let env = cli.environment.as_deref();
        let project = match &cli.project {
            Some(dir) => Project::load(dir, env)?,
            None => Project::discover(&std::env::current_dir()?, env)?,
        };
        // Secrets resolved while loading must be hidden from every message from now on.
        let probe = project.redactor.clone();
        for secret in [
            project.settings.metadata.url.clone(),
            project.settings.lake.url.to_string(),
        ] {
            if probe.redact(&secret) != secret {
                redactor.add(secret);
            }
        }
        for v in project.settings.lake.options.values() {
            if probe.redact(v) != *v {
                redactor.add(v.clone());
            }
        }
        Self::open(project, cli.quiet, cli.json).await
    }

    async fn open(project: Project, quiet: bool, json: bool) -> Result<Self> {
        let lake = Lake::open(
            &project.settings.lake.url,
            project.settings.lake.options.clone().into_iter().collect(),
        )
        .await?;
        let engine = Engine::new(lake, &project.settings.engine).await?;
        let meta = match MetaStore::connect(&project.settings.metadata.url).await {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "Metadata store unavailable; this run is not recorded.");
                None
            }
        };
        Ok(Self {
            project,
            engine,
            meta,
            quiet,
            json,
            node_results: std::sync::Mutex::new(Vec::new()),
            lineage: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The metadata store, for commands that cannot work without it.
    pub(crate) fn meta(&self) -> Result<&MetaStore> {
        self.meta.as_ref().with_context(|| {
            format!(
                "the metadata store at {} is unavailable; check `metadata.url` in strata.yml",
                self.project
                    .redactor
                    .redact(&self.project.settings.metadata.url)
            )
        })
    }

    /// Runs `f`, recording the run (who, what, when, rows, outcome) in the metadata store.
    async fn recorded<F, Fut>(&self, command: &str, args: &str, f: F) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<i64>>>,
    {
        let run = match &self.meta {
            Some(m) => m
                .start_run(NewRun {
                    command: command.to_string(),
                    args: self.project.redactor.redact(args),
                    principal: whoami(),
                    environment: self.project.settings.environment.clone(),
                })
                .await
                .ok(),
            None => None,
        };
        let result = f().await;
        let nodes =
            std::mem::take(&mut *self.node_results.lock().unwrap_or_else(|p| p.into_inner()));
        if let (Some(m), Some(id), false) = (&self.meta, run, nodes.is_empty())
            && let Err(e) = m.record_node_results(&id, &nodes).await
        {
            tracing::warn!(error = %e, "Could not record the run's node results.");
        }
        let lineage = std::mem::take(&mut *self.lineage.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(m) = &self.meta {
            for (node, edges) in &lineage {
                if let Err(e) = m.replace_column_lineage(run.as_ref(), node, edges).await {
                    tracing::warn!(error = %e, node, "Could not record the model's column lineage.");
                }
            }
        }
        if let (Some(m), Some(id)) = (&self.meta, run) {
            let outcome = match &result {
                Ok(rows) => RunOutcome::success(*rows),
                Err(e) => RunOutcome::failed(self.project.redactor.redact(&render_error(e))),
            };
            if let Err(e) = m.finish_run(&id, outcome).await {
                tracing::warn!(error = %e, "Could not record the end of the run.");
            }
        }
        result.map(|_| ())
    }
}

/// `strata serve`: starts the surfaces and runs until interrupted.
async fn serve(ctx: &Ctx, opts: strata_server::ServeOptions) -> Result<()> {
    let meta = std::sync::Arc::new(
        MetaStore::connect(&ctx.project.settings.metadata.url)
            .await
            .context("the server keeps users and grants in the metadata store")?,
    );
    let server =
        strata_server::Server::start(ctx.engine.clone(), std::sync::Arc::clone(&meta), &opts)
            .await?;
    if meta.users().await?.is_empty() {
        eprintln!("warning: no users yet; add one with `strata users add <name> --password-stdin`");
    }
    let addr = server.pg_addr;
    let tls = opts.tls.is_some();
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({
                "postgres": addr.to_string(),
                "http": server.http_addr.map(|a| a.to_string()),
                "flight": server.flight_addr.map(|a| a.to_string()),
            })
        );
    } else {
        println!("Postgres wire protocol on {addr}");
        println!(
            "  psql 'postgres://<user>@{}:{}/strata{}'",
            addr.ip(),
            addr.port(),
            if tls { "?sslmode=require" } else { "" }
        );
        if let Some(http) = server.http_addr {
            let scheme = if tls { "https" } else { "http" };
            println!(
                "REST API on {scheme}://{http}/api/v1 (OpenAPI: {scheme}://{http}/api/v1/openapi.json)"
            );
            println!("  curl -u <user>:<password> {scheme}://{http}/api/v1/tables");
        }
        if let Some(flight) = server.flight_addr {
            let scheme = if tls { "grpc+tls" } else { "grpc" };
            println!("Arrow Flight SQL on {scheme}://{flight}");
        }
        println!("Stop with Ctrl-C.");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Runs until the process is interrupted (the command's Ctrl-C handler ends it).
    std::future::pending::<()>().await;
    server.stop().await;
    Ok(())
}

pub(crate) fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

async fn run(cli: Cli, redactor: strata_types::Redactor) -> Result<()> {
    match &cli.command {
        Command::Init { dir, name } => {
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from("."));
            let written = strata_project::init_project(&dir, &InitOptions { name: name.clone() })?;
            if !cli.quiet {
                println!("Created a Strata project in {}", dir.display());
                for w in written {
                    println!("  {}", w.strip_prefix(&dir).unwrap_or(&w).display());
                }
                println!(
                    "\nNext:\n  cd {}\n  strata sql \"create table raw.hello as select 1 as x\"\n  strata tables",
                    dir.display()
                );
            }
            Ok(())
        }
        Command::Compile { args } => models_cmd::compile(cli.project.as_deref(), args, cli.quiet),
        Command::Seed { args } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            models_cmd::seed(&ctx, cli.project.as_deref(), args).await
        }
        Command::Run { args, full_refresh } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            models_cmd::run(&ctx, cli.project.as_deref(), args, *full_refresh).await
        }
        Command::Test { args } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            models_cmd::test(&ctx, cli.project.as_deref(), args).await
        }
        Command::Snapshot { args } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            models_cmd::snapshot(&ctx, cli.project.as_deref(), args).await
        }
        Command::Build { args, full_refresh } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            models_cmd::build(&ctx, cli.project.as_deref(), args, *full_refresh).await
        }
        Command::Source {
            command: models_checks::SourceCommand::Freshness { args },
        } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            models_checks::source_freshness(&ctx, cli.project.as_deref(), args).await
        }
        Command::Docs {
            command: models_docs::DocsCommand::Generate { args, no_compile },
        } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            models_docs::generate(&ctx, cli.project.as_deref(), args, *no_compile).await
        }
        Command::Ls {
            args,
            resource_type,
            output,
        } => models_cmd::ls(cli.project.as_deref(), args, resource_type, *output),
        Command::Show {
            args,
            inline,
            limit,
        } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            models_cmd::show(
                &ctx,
                cli.project.as_deref(),
                args,
                inline.as_deref(),
                *limit,
            )
            .await
        }
        Command::Lineage { target, args } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            lineage_cmd::lineage(&ctx, cli.project.as_deref(), args, target).await
        }
        Command::Audit {
            user,
            surface,
            limit,
        } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            access_cmd::audit(
                ctx.meta()?,
                user.as_deref(),
                surface.as_deref(),
                *limit,
                ctx.json,
            )
            .await
        }
        Command::Serve {
            pg_addr,
            http_addr,
            no_http,
            flight_addr,
            no_flight,
            tls_cert,
            tls_key,
            rate_limit,
            max_rows,
            statement_timeout,
        } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            let opts = strata_server::ServeOptions {
                pg_addr: *pg_addr,
                http_addr: (!no_http).then_some(*http_addr),
                flight_addr: (!no_flight).then_some(*flight_addr),
                tls: match (tls_cert, tls_key) {
                    (Some(cert), Some(key)) => Some(strata_server::TlsFiles {
                        cert: cert.clone(),
                        key: key.clone(),
                    }),
                    _ => None,
                },
                rest: strata_server::rest::RestLimits {
                    rate_per_second: *rate_limit,
                    burst: (*rate_limit * 2.0).max(1.0),
                    max_rows: *max_rows,
                    timeout: std::time::Duration::from_secs(*statement_timeout),
                    ..Default::default()
                },
            };
            serve(&ctx, opts).await
        }
        Command::Users { command } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            access_cmd::users(ctx.meta()?, command.clone(), ctx.json).await
        }
        Command::Roles { command } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            access_cmd::roles(ctx.meta()?, command.clone(), ctx.json).await
        }
        Command::Grants { command } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            access_cmd::grants(ctx.meta()?, command.clone(), ctx.json, &whoami()).await
        }
        Command::Tokens { command } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            access_cmd::tokens(ctx.meta()?, command.clone(), ctx.json).await
        }
        Command::Policies { command } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            access_cmd::policies(ctx.meta()?, command.clone(), ctx.json).await
        }
        Command::Access { command } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            access_file::run(ctx.meta()?, &ctx.project.root, command.clone(), ctx.json).await
        }
        Command::Demo {
            dir,
            scale,
            postgres,
            no_serve,
        } => run_demo(&cli, dir, *scale, postgres.as_deref(), !*no_serve).await,
        Command::Sql {
            query,
            format,
            output,
            max_rows,
        } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            let sql = if query == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                query.clone()
            };
            let session = ctx.engine.session().await?;
            ctx.recorded("sql", &sql, || async {
                let rows = run_sql(
                    &session,
                    &sql,
                    *format,
                    output.as_deref(),
                    *max_rows,
                    ctx.quiet,
                )
                .await?;
                Ok(Some(rows as i64))
            })
            .await
        }
        Command::Shell => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            let session = ctx.engine.session().await?;
            shell::run(&session, &ctx.project.state_dir().join("history")).await
        }
        Command::Tables { namespace } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            list_tables(&ctx, namespace.as_deref()).await
        }
        Command::Describe { table, history } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            describe(&ctx, table, *history).await
        }
        Command::Optimize { table, zorder_by } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            let lake = ctx.engine.lake().clone();
            let tables = match table {
                Some(t) => vec![parse_table(t)?],
                None => lake.tables(None).await?,
            };
            ctx.recorded("optimize", &format!("{tables:?}"), || async {
                for t in &tables {
                    if !zorder_by.is_empty() {
                        let r = lake.zorder(t, zorder_by).await?;
                        if !ctx.quiet {
                            println!(
                                "{t}: {} files rewritten into {} ordered by {}",
                                r.files_removed,
                                r.files_added,
                                zorder_by.join(", ")
                            );
                        }
                        continue;
                    }
                    let r = lake.optimize(t).await?;
                    if !ctx.quiet {
                        println!(
                            "{t}: {} small files compacted into {}",
                            r.files_removed, r.files_added
                        );
                    }
                }
                Ok(None)
            })
            .await
        }
        Command::Vacuum {
            table,
            retain_hours,
            dry_run,
            force,
        } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            let t = parse_table(table)?;
            let lake = ctx.engine.lake().clone();
            ctx.recorded("vacuum", table, || async {
                let r = lake
                    .vacuum(
                        &t,
                        retain_hours.map(|h| Duration::from_secs(h * 3600)),
                        *dry_run,
                        *force,
                    )
                    .await?;
                if ctx.json {
                    println!(
                        "{}",
                        serde_json::json!({"table": t.to_string(), "dry_run": r.dry_run, "files": r.files})
                    );
                } else if !ctx.quiet {
                    let verb = if r.dry_run { "would delete" } else { "deleted" };
                    println!("{t}: {verb} {} files", r.files.len());
                    for f in &r.files {
                        println!("  {f}");
                    }
                }
                Ok(Some(r.files.len() as i64))
            })
            .await
        }
        Command::Sources(cmd) => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            sources_cmd::run(&ctx, cmd).await
        }
        Command::Ingest {
            selectors,
            full_refresh,
            parallel,
        } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            sources_cmd::ingest(&ctx, selectors, *full_refresh, *parallel).await
        }
        Command::Runs { limit } => {
            let ctx = Ctx::load(&cli, &redactor).await?;
            let Some(meta) = &ctx.meta else {
                bail!(
                    "the metadata store at {} is unavailable",
                    ctx.project.settings.metadata.url
                );
            };
            let runs = meta.runs(RunFilter::new().limit(*limit)).await?;
            let mut table = comfy_table::Table::new();
            table
                .load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
                .set_header([
                    "started", "command", "status", "rows", "duration", "user", "args",
                ]);
            for r in runs {
                let args: String = r.args.chars().take(60).collect();
                table.add_row([
                    r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    r.command,
                    r.status.to_string(),
                    r.rows.map(|n| n.to_string()).unwrap_or_default(),
                    r.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default(),
                    r.principal,
                    args,
                ]);
            }
            println!("{table}");
            Ok(())
        }
    }
}

fn parse_table(s: &str) -> Result<TableName> {
    TableName::parse_with_default(&s.to_ascii_lowercase(), strata_engine::DEFAULT_NAMESPACE)
        .map_err(Into::into)
}

/// Runs each statement of `sql`, printing results; returns rows output or affected.
async fn run_sql(
    session: &Session,
    sql: &str,
    format: Format,
    output: Option<&Path>,
    max_rows: usize,
    quiet: bool,
) -> Result<u64> {
    let stmts = session.parse(sql)?;
    if stmts.is_empty() {
        bail!("no SQL statement given");
    }
    let mut total = 0;
    for stmt in stmts {
        let started = Instant::now();
        // A spinner on the terminal (never in pipes or with --quiet) while a statement runs.
        let spinner = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            let text: String = stmt.to_string().chars().take(60).collect();
            let pb = indicatif::ProgressBar::new_spinner().with_message(text);
            pb.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .expect("valid template"),
            );
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        };
        let result = session.execute(stmt).await;
        spinner.finish_and_clear();
        match result? {
            // SET and similar statements answer with no columns: nothing to print.
            StatementResult::Rows { schema, stream } if schema.fields().is_empty() => {
                strata_engine::datafusion::physical_plan::common::collect(stream)
                    .await
                    .map_err(strata_engine::Error::from)?;
            }
            StatementResult::Rows { schema, stream } => {
                total += output::write_rows(schema, stream, format, output, max_rows).await?;
            }
            StatementResult::Done { tag, rows } => {
                total += rows.unwrap_or(0);
                if !quiet {
                    eprintln!("{tag} ({:.2?})", started.elapsed());
                }
            }
        }
    }
    Ok(total)
}

async fn list_tables(ctx: &Ctx, ns: Option<&str>) -> Result<()> {
    let lake = ctx.engine.lake();
    let tables = lake.tables(ns).await?;
    let mut infos = Vec::new();
    for t in &tables {
        infos.push(lake.table_info(t).await?);
    }
    let views = lake.list_views(ns).await?;
    if ctx.json {
        let rows: Vec<_> = infos
            .iter()
            .map(|i| {
                serde_json::json!({
                    "table": i.name.to_string(), "kind": "table", "rows": i.rows, "bytes": i.bytes,
                    "files": i.files, "version": i.version,
                    "last_modified": i.last_modified.map(|t| t.to_rfc3339()),
                })
            })
            .chain(views.iter().map(|v| {
                serde_json::json!({"table": v.name.to_string(), "kind": "view",
                    "last_modified": v.created_at.to_rfc3339()})
            }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if infos.is_empty() && views.is_empty() {
        println!(
            "The lake at {} holds no tables yet. Create one with\n  strata sql \"create table raw.t as select 1 as x\"",
            lake.root()
        );
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header([
            "namespace",
            "table",
            "kind",
            "rows",
            "size",
            "files",
            "version",
            "last modified",
        ]);
    for i in &infos {
        table.add_row([
            i.name.namespace.clone(),
            i.name.name.clone(),
            "table".into(),
            i.rows.to_string(),
            human_bytes(i.bytes),
            i.files.to_string(),
            i.version.to_string(),
            i.last_modified
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default(),
        ]);
    }
    for v in &views {
        table.add_row([
            v.name.namespace.clone(),
            v.name.name.clone(),
            "view".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            v.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        ]);
    }
    for c in 3..=6 {
        if let Some(col) = table.column_mut(c) {
            col.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    println!("{table}");
    Ok(())
}

async fn describe(ctx: &Ctx, name: &str, history: usize) -> Result<()> {
    let t = parse_table(name)?;
    let lake = ctx.engine.lake();
    if let Some(v) = lake.view(&t).await? {
        println!("View {t}\n\n{}", v.sql);
        return Ok(());
    }
    let info = lake.table_info(&t).await?;
    let commits = lake.history(&t, Some(history)).await?;
    if ctx.json {
        let cols: Vec<_> = info
            .schema
            .fields()
            .iter()
            .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable(), "comment": f.metadata().get("comment").filter(|c| !c.is_empty())}))
            .collect();
        let hist: Vec<_> = commits
            .iter()
            .map(|c| serde_json::json!({"version": c.version, "timestamp": c.timestamp.map(|t| t.to_rfc3339()), "operation": c.operation, "parameters": c.parameters, "metrics": c.metrics}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "table": t.to_string(), "location": lake.table_url(&t).to_string(),
                "version": info.version, "rows": info.rows, "bytes": info.bytes, "files": info.files,
                "partition_columns": info.partition_columns, "description": info.description,
                "columns": cols, "history": hist,
            }))?
        );
        return Ok(());
    }
    println!(
        "Table {t}  (Delta, version {}, {} rows, {}, {} files)",
        info.version,
        info.rows,
        human_bytes(info.bytes),
        info.files
    );
    println!("Location: {}", lake.table_url(&t));
    if let Some(d) = &info.description {
        println!("Description: {d}");
    }
    println!(
        "Partitioned by: {}",
        if info.partition_columns.is_empty() {
            "(not partitioned)".to_string()
        } else {
            info.partition_columns.join(", ")
        }
    );
    let comment = |f: &strata_lake::deltalake::arrow::datatypes::Field| {
        f.metadata().get("comment").cloned().unwrap_or_default()
    };
    let with_comments = info.schema.fields().iter().any(|f| !comment(f).is_empty());
    let mut cols = comfy_table::Table::new();
    cols.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    if with_comments {
        cols.set_header(["column", "type", "nullable", "comment"]);
    } else {
        cols.set_header(["column", "type", "nullable"]);
    }
    for f in info.schema.fields() {
        let mut row = vec![
            f.name().clone(),
            f.data_type().to_string(),
            if f.is_nullable() { "yes" } else { "no" }.to_string(),
        ];
        if with_comments {
            row.push(comment(f));
        }
        cols.add_row(row);
    }
    println!("\n{cols}");
    let mut hist = comfy_table::Table::new();
    hist.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(["version", "timestamp", "operation", "details"]);
    for c in commits {
        let details = c
            .metrics
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with("num_") || k.starts_with("num"))
                    .take(4)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        hist.add_row([
            c.version.to_string(),
            c.timestamp
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            c.operation,
            details,
        ]);
    }
    println!("\nHistory (newest first):\n{hist}");
    Ok(())
}

async fn run_demo(
    cli: &Cli,
    dir: &Path,
    scale: u64,
    postgres: Option<&str>,
    serve: bool,
) -> Result<()> {
    if scale == 0 {
        bail!("--scale must be at least 1 order");
    }
    if !dir.join(strata_project::PROJECT_FILE).exists() {
        strata_project::init_project(
            dir,
            &InitOptions {
                name: Some("lumen_goods".into()),
            },
        )?;
    }
    let project = Project::load(dir, cli.environment.as_deref())
        .with_context(|| format!("loading the demo project in {}", dir.display()))?;
    let ctx = Ctx::open(project, cli.quiet, cli.json).await?;
    let started = Instant::now();
    if !ctx.quiet {
        println!(
            "Lumen Goods demo: {scale} orders into {}",
            ctx.project.root.display()
        );
    }
    let data = demo::generate(scale)?;
    let rows = data.rows();
    let (target, where_) = match postgres {
        Some(url) => (
            demo::Operational::Postgres(url),
            format!(
                "PostgreSQL schema {} ({})",
                demo::PG_SCHEMA,
                ctx.project
                    .redactor
                    .redact(&strata_types::redact_url_password(url))
            ),
        ),
        None => (
            demo::Operational::Sqlite,
            "data/lumen_goods.db (SQLite)".to_string(),
        ),
    };
    ctx.recorded("demo", &format!("--scale {scale}"), || async {
        demo::write_operational(&ctx.project.root, &data, target).await?;
        Ok(Some(rows as i64))
    })
    .await?;
    if !ctx.quiet {
        println!(
            "The shop's systems: customers, orders and order items in {where_}; payment exports (CSV) in landing/payments/; the product catalog (JSON) in landing/catalog/. Sources in sources/shop.yml and sources/exports.yml.\n\nIngesting with `strata ingest`:"
        );
    }
    sources_cmd::ingest(&ctx, &[], false, 4).await?;
    if !ctx.quiet {
        println!(
            "Loaded {rows} rows into raw.customers, raw.products, raw.orders, raw.order_items, raw.payments in {:.1?}\n",
            started.elapsed()
        );
    }
    let written = demo::write_dbt_project(&ctx.project.root)?;
    if !ctx.quiet {
        let note = match written.len() {
            0 => "kept as it is".to_string(),
            n if n == demo::DBT_PROJECT.len() => "written".to_string(),
            n => format!("{n} missing file(s) written, the others kept"),
        };
        println!(
            "The analytics: a dbt project (dbt_project.yml, models/, seeds/, snapshots/, tests/; {note}) of staging views, intermediate models and marts.\n\nBuilding it with `strata build`:"
        );
    }
    // `strata build` with its defaults: every node, into the `analytics` schema.
    let build_args = {
        use clap::{Args, FromArgMatches};
        let matches = models_cmd::ModelArgs::augment_args(clap::Command::new("build"))
            .try_get_matches_from(["build"])?;
        models_cmd::ModelArgs::from_arg_matches(&matches)?
    };
    models_cmd::build(&ctx, Some(&ctx.project.root), &build_args, false).await?;
    if !ctx.quiet {
        println!();
    }
    let session = ctx.engine.session().await?;
    for (title, sql) in demo::REPORT {
        let batches = session.sql(sql).await?;
        if ctx.json {
            println!("{}", output::json_array(&batches)?);
        } else if let Some(first) = batches.first() {
            println!(
                "{title}\n{}\n",
                output::render_table(&first.schema(), &batches)?
            );
        }
    }
    let meta = ctx.meta()?;
    demo::setup_access(meta).await?;
    if !ctx.quiet {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "strata".into());
        println!(
            "Try it yourself (the binary is {exe}; `cargo install --path crates/strata` puts `strata` on your PATH):\n  cd {}\n  strata tables\n  strata sql \"select segment_name, count(*) from analytics.customer_rfv group by 1\"\n  strata build                       # seeds, models, snapshot and tests again\n  strata lineage customer_rfv        # where each column comes from\n  strata docs generate               # target/manifest.json and catalog.json\n  strata shell\n",
            dir.display()
        );
    }
    let addr: std::net::SocketAddr = strata_server::DEFAULT_PG_ADDR.parse()?;
    let http: std::net::SocketAddr = strata_server::DEFAULT_HTTP_ADDR.parse()?;
    let connect = format!(
        "Users: admin (password admin, sees everything) and analyst (password analyst, role analysts: \
         the Europe region's orders and customers only, emails masked).\n  \
         psql 'postgres://analyst:analyst@{addr}/strata' -c 'select customer_name, email, sales_region from analytics.dim_customers limit 5'\n  \
         psql 'postgres://admin:admin@{addr}/strata' -c 'select sales_region, count(*) from analytics.fct_orders group by 1'\n  \
         curl -u analyst:analyst 'http://{http}/api/v1/tables/analytics/dim_customers?select=customer_name,email&limit=5'"
    );
    use std::io::IsTerminal;
    if serve && std::io::stdout().is_terminal() {
        let server = strata_server::Server::start(
            ctx.engine.clone(),
            std::sync::Arc::new(MetaStore::connect(&ctx.project.settings.metadata.url).await?),
            &strata_server::ServeOptions::default(),
        )
        .await?;
        println!(
            "Serving the warehouse over the Postgres protocol on {} and HTTP on {} (Ctrl-C stops it).\n{connect}",
            server.pg_addr,
            server.http_addr.map(|a| a.to_string()).unwrap_or_default()
        );
        std::future::pending::<()>().await;
        server.stop().await;
    } else if !ctx.quiet {
        println!(
            "Serve it to psql and BI tools with `strata serve` (in {}).\n{connect}",
            dir.display()
        );
    }
    Ok(())
}
