//! Integration tests of the warehouse: SQL behaviour in sqllogictest files (`tests/slt/`),
//! run against a real lake in a temporary directory, plus engine-level checks.

mod access;
mod lookup;
mod memory;
mod slt;
mod view_chain;

use std::path::Path;

use strata_engine::Engine;
use strata_lake::Lake;
use strata_project::EngineSettings;

/// An engine over a fresh lake in `dir`.
pub(crate) async fn engine_in(dir: &Path, memory_limit: Option<u64>) -> Engine {
    let lake_dir = dir.join("lake");
    let url = url::Url::from_directory_path(&lake_dir).unwrap();
    let lake = Lake::open(&url, Default::default()).await.unwrap();
    let settings = EngineSettings {
        memory_limit,
        spill_dir: dir.join("spill"),
        target_partitions: 4,
        batch_size: 8192,
    };
    Engine::new(lake, &settings).await.unwrap()
}
