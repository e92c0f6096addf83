//! Integration tests for `strata-meta`, each behaviour against both backends.
//!
//! SQLite runs in a temporary directory. PostgreSQL runs when `STRATA_IT_POSTGRES` holds a
//! base URL, e.g.
//!
//! ```text
//! STRATA_IT_POSTGRES=postgres://postgres@127.0.0.1:5432/test cargo test -p strata-meta
//! ```
//!
//! Each Postgres test gets its own schema (`meta_it_<uuid>`), dropped when the test ends;
//! without the variable the Postgres variants print a skip line and pass.

mod support;

mod access;
mod connect;
mod errors;
mod runs;
mod schema_changes;
mod settings;
