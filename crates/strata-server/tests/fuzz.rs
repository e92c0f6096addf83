//! Bounded fuzzing of the REST filter language: `STRATA_FUZZ_SECS` seconds (default 5) of
//! random and mutated query strings; a panic, or an accepted request that is anything but
//! one SELECT over the one table, fails the test with the input. (Malformed Postgres
//! protocol messages are thrown at a live server by the CLI tests, `garbage.rs`.)

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

fn budget() -> Duration {
    let secs = std::env::var("STRATA_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(secs)
}

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn rest_filters_never_panic_and_never_escape_the_select() {
    use strata_engine::datafusion::arrow::datatypes::{DataType, Field, Schema};
    use strata_engine::datafusion::sql::sqlparser::ast::Statement;
    use strata_server::rest::filter::Query;

    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("ok", DataType::Boolean, true),
    ]);
    let keys = [
        "id", "name", "amount", "ok", "select", "order", "limit", "offset", "or", "and", "not.or",
        "nope", "", "id;", "ｉｄ",
    ];
    let atoms = [
        "eq.",
        "neq.",
        "gt.",
        "lt.",
        "gte.",
        "like.",
        "ilike.",
        "in.(",
        "is.",
        "not.",
        "null",
        "true",
        "1",
        "-7",
        "1e3",
        "NaN",
        "x'",
        "'; drop table t; --",
        "\"",
        "\\",
        ",",
        ")",
        "(",
        "*",
        ".",
        "id",
        "name",
        "desc",
        "nullslast",
        "and(",
        "or(",
        "\u{200b}",
        "ö",
        "%27",
        "$1",
        "/*",
        "*/",
    ];
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let deadline = Instant::now() + budget();
    let mut accepted = 0u64;
    while Instant::now() < deadline {
        let mut pairs = Vec::new();
        for _ in 0..=rng.below(4) {
            let key = keys[rng.below(keys.len())].to_string();
            let mut value = String::new();
            for _ in 0..rng.below(8) {
                value.push_str(atoms[rng.below(atoms.len())]);
            }
            pairs.push((key, value));
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let q = Query::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).ok()?;
            q.to_statement(["marts", "orders"], &schema, Some(3), 0, 101)
                .ok()
        }));
        let stmt = match outcome {
            Ok(s) => s,
            Err(_) => panic!("the filter parser panicked on {pairs:?}"),
        };
        let Some(stmt) = stmt else { continue };
        accepted += 1;
        // Whatever was accepted is one SELECT over the one table. (The engine runs this
        // syntax tree itself; it is never printed and parsed again.)
        let text = stmt.to_string();
        assert!(
            matches!(stmt, Statement::Query(_)),
            "{pairs:?} produced {text}"
        );
        let mut relations = Vec::new();
        let _ = strata_engine::datafusion::sql::sqlparser::ast::visit_relations(&stmt, |r| {
            relations.push(r.to_string());
            std::ops::ControlFlow::<()>::Continue(())
        });
        assert_eq!(
            relations,
            vec!["\"marts\".\"orders\""],
            "{pairs:?} produced {text}"
        );
    }
    assert!(accepted > 100, "only {accepted} accepted requests");
}
