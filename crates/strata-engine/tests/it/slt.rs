//! Runs every `tests/slt/*.slt` file. Each file gets its own lake; each `connection`
//! label in a file opens a new session on the same engine, so files can check that
//! definitions persist across sessions.

use std::path::PathBuf;

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use strata_engine::datafusion::arrow::array::Array;
use strata_engine::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use strata_engine::{Engine, Session, StatementResult};

struct Db {
    session: Session,
}

#[async_trait]
impl AsyncDB for Db {
    type Error = strata_engine::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let mut stmts = self.session.parse(sql)?;
        if stmts.len() != 1 {
            return Err(strata_engine::Error::Invalid(format!(
                "the test harness runs one statement at a time, got {}",
                stmts.len()
            )));
        }
        match self.session.execute(stmts.remove(0)).await? {
            StatementResult::Done { rows, .. } => {
                Ok(DBOutput::StatementComplete(rows.unwrap_or(0)))
            }
            StatementResult::Rows { schema, stream } => {
                let batches = strata_engine::datafusion::physical_plan::common::collect(stream)
                    .await
                    .map_err(strata_engine::Error::from)?;
                let opts = FormatOptions::default().with_null("NULL");
                let mut rows = Vec::new();
                for b in &batches {
                    let fmts: Vec<_> = b
                        .columns()
                        .iter()
                        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                        .collect::<Result<_, _>>()
                        .map_err(|e| {
                            strata_engine::Error::from(
                                strata_engine::datafusion::error::DataFusionError::from(e),
                            )
                        })?;
                    for r in 0..b.num_rows() {
                        rows.push(
                            fmts.iter()
                                .zip(b.columns())
                                .map(|(f, c)| {
                                    let s = f.value(r).to_string();
                                    if c.is_valid(r) && s.is_empty() {
                                        "(empty)".to_string()
                                    } else {
                                        s
                                    }
                                })
                                .collect(),
                        );
                    }
                }
                Ok(DBOutput::Rows {
                    types: vec![DefaultColumnType::Any; schema.fields().len()],
                    rows,
                })
            }
        }
    }

    fn engine_name(&self) -> &str {
        "strata"
    }

    async fn shutdown(&mut self) {}
}

async fn run_file(name: &str) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
    let path = root.join("slt").join(format!("{name}.slt"));
    let dir = tempfile::tempdir().unwrap();
    let engine: Engine = crate::engine_in(dir.path(), None).await;
    let mut runner = sqllogictest::Runner::new(move || {
        let engine = engine.clone();
        async move {
            Ok(Db {
                session: engine.session().await?,
            })
        }
    });
    runner.with_column_validator(|_, _| true);
    runner.set_var("DATA".into(), root.join("data").display().to_string());
    if let Err(e) = runner.run_file_async(&path).await {
        panic!("{}\n\n{e}", path.display());
    }
}

macro_rules! slt {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run_file(stringify!($name)).await;
            }
        )*
    };
}

slt!(
    ddl,
    dml,
    merge,
    time_travel,
    views,
    files,
    errors,
    types,
    compat
);
