//! `strata shell`: interactive SQL. Statements end with `;` and may span lines; history is
//! kept in `.strata/history`. `\q` quits, `\d` lists tables, `\d name` describes one.

use std::path::Path;

use anyhow::Result;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use strata_engine::Session;

use crate::output::Format;

pub(crate) async fn run(session: &Session, history: &Path) -> Result<()> {
    let mut rl = DefaultEditor::new()?;
    let _ = rl.load_history(history);
    println!("Strata SQL shell. End statements with `;`. \\d lists tables, \\q quits.");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "strata> "
        } else {
            "   ...> "
        };
        match rl.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() && trimmed.starts_with('\\') {
                    let _ = rl.add_history_entry(trimmed);
                    match meta_command(trimmed) {
                        Some(sql) => execute(session, &sql).await,
                        None => break,
                    }
                    continue;
                }
                if trimmed.is_empty() && buffer.is_empty() {
                    continue;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if trimmed.ends_with(';') {
                    let sql = std::mem::take(&mut buffer);
                    let _ = rl.add_history_entry(sql.trim());
                    execute(session, &sql).await;
                }
            }
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                println!("(statement cleared; \\q or Ctrl-D quits)");
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(parent) = history.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = rl.save_history(history);
    Ok(())
}

/// `\d` → list tables; `\d t` → its columns; `\q` → None (quit).
fn meta_command(cmd: &str) -> Option<String> {
    let mut parts = cmd.split_whitespace();
    match parts.next() {
        Some("\\q") | Some("\\quit") => None,
        Some("\\d") | Some("\\dt") => Some(match parts.next() {
            Some(t) => {
                let (ns, name) = t.split_once('.').unwrap_or((strata_engine::DEFAULT_NAMESPACE, t));
                format!(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = '{}' AND table_name = '{}' ORDER BY ordinal_position",
                    ns.replace('\'', "''"),
                    name.replace('\'', "''")
                )
            }
            None => "SELECT table_schema AS namespace, table_name AS name, table_type AS kind FROM information_schema.tables WHERE table_catalog = 'strata' AND table_schema <> 'information_schema' ORDER BY 1, 2".into(),
        }),
        _ => Some("SELECT 'unknown command; try \\d, \\d <table> or \\q' AS help".into()),
    }
}

async fn execute(session: &Session, sql: &str) {
    let started = std::time::Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    let work = crate::run_sql(session, sql, Format::Table, None, 200, false);
    tokio::select! {
        r = work => match r {
            Ok(_) => eprintln!("Time: {:.3?}", started.elapsed()),
            Err(e) => eprintln!("error: {}", crate::render_error(&e)),
        },
        _ = ctrl_c => eprintln!("cancelled; nothing was committed"),
    }
}
