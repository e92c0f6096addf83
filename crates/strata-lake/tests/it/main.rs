//! Integration tests of `strata-lake`, each run on a local lake and on S3 (moto).
//!
//! `scripts/test.sh` starts a moto server and exports `STRATA_IT_S3_ENDPOINT` and
//! `STRATA_PYTHON`; without them the S3 variants and the Python interop test print a skip
//! line and pass.

mod common;
mod concurrency;
mod dml;
mod history;
mod interop;
mod maintenance;
mod s3_options;
mod schema;
mod tables;
mod views;
mod writes;
