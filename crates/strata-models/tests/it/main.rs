//! Integration tests of `strata-models` against the fixture projects.

mod errors;
mod jinja;
mod load;
mod manifest;
mod select;

use std::path::{Path, PathBuf};

use strata_models::{LoadOptions, Manifest};

pub(crate) fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jaffle_shop")
}

pub(crate) fn manifest() -> Manifest {
    Manifest::load(&fixture(), &LoadOptions::default()).expect("the fixture loads")
}

/// A copy of the fixture in a temporary directory, for tests that edit files.
pub(crate) fn copy_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&fixture(), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy file");
        }
    }
}

/// Compiled SQL of the model named `name` in the fixture.
pub(crate) fn compiled(m: &Manifest, id: &str) -> String {
    m.compile_node(id, &Default::default()).expect("compiles")
}
