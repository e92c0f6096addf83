#!/usr/bin/env python3
"""Builds a dbt project with the real dbt (dbt-core + dbt-duckdb) and exports every table.

    python dbt_reference.py PROJECT_DIR OUT_DIR [--setup-sql FILE] [--then-copy DIR]...

The reference side of Strata's dbt compatibility test
(crates/strata/tests/cli/dbt_compat.rs). Steps:

1. copy PROJECT_DIR into a temporary directory (the project itself is never written to);
2. write a profiles.yml for the project's `profile:` targeting a DuckDB file there
   (schema `main`, 4 threads);
3. run FILE in that DuckDB database first when `--setup-sql` is given (source tables);
4. `dbt deps` when the project has packages.yml (local packages only: no network),
   then `dbt build`; a dbt failure fails this script with dbt's output;
   each `--then-copy DIR`, in order, copies DIR's files over the project (same relative
   paths, replacing or adding files) and runs `dbt build` again: later runs of
   incremental models and snapshots;
5. for every model (not ephemeral), seed and snapshot in target/manifest.json, export its
   relation to OUT_DIR/<unique_id>.parquet and describe them all in OUT_DIR/relations.json:
   [{"unique_id", "name", "resource_type", "parquet", "columns": [[name, duckdb_type], ...]}].

Needs the packages listed in scripts/requirements-test.txt (dbt-core, dbt-duckdb).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EXPORTED = ("model", "seed", "snapshot")


def fail(msg: str) -> None:
    print(f"dbt_reference.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def read_profile_name(project: Path) -> str:
    import yaml  # a dbt-core dependency

    try:
        doc = yaml.safe_load((project / "dbt_project.yml").read_text())
    except FileNotFoundError:
        fail(f"{project} has no dbt_project.yml")
    except yaml.YAMLError as e:
        fail(f"{project / 'dbt_project.yml'} is not valid YAML: {e}")
    name = (doc or {}).get("profile") or (doc or {}).get("name")
    if not name:
        fail(f"{project / 'dbt_project.yml'} names neither a profile nor a project")
    return str(name)


def run_dbt(args: list[str], project: Path, profiles: Path) -> None:
    """Runs the dbt executable of this Python's environment; fails with its output."""
    dbt = Path(sys.executable).with_name("dbt")
    if not dbt.exists():
        fail(f"dbt is not installed beside {sys.executable} (pip install dbt-core dbt-duckdb)")
    cmd = [str(dbt), *args, "--project-dir", str(project), "--profiles-dir", str(profiles)]
    env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false", DBT_USE_COLORS="false", DO_NOT_TRACK="1")
    p = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"`dbt {' '.join(args)}` failed (exit {p.returncode}):\n{p.stdout}\n{p.stderr}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("project_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--setup-sql", type=Path, help="SQL run in DuckDB before dbt (source tables)")
    ap.add_argument("--then-copy", type=Path, action="append", default=[], metavar="DIR",
                    help="after the build, copy DIR's files over the project and build again "
                         "(repeatable: one more run each)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()

    try:
        import duckdb
    except ImportError:
        fail("the duckdb module is missing (pip install dbt-duckdb)")
    if not (a.project_dir / "dbt_project.yml").is_file():
        fail(f"{a.project_dir} is not a dbt project (no dbt_project.yml)")
    setup = None
    if a.setup_sql is not None:
        try:
            setup = a.setup_sql.read_text()
        except OSError as e:
            fail(f"cannot read the setup SQL: {e}")
    for d in a.then_copy:
        if not d.is_dir():
            fail(f"--then-copy {d}: not a directory")

    tmp = Path(tempfile.mkdtemp(prefix="dbt_reference_"))
    try:
        project = tmp / "project"
        shutil.copytree(a.project_dir, project, ignore=shutil.ignore_patterns("target", "dbt_packages", "logs"))
        db = tmp / "warehouse.duckdb"
        profile = read_profile_name(project)
        (tmp / "profiles.yml").write_text(
            json.dumps(  # JSON is YAML
                {profile: {"target": "ref", "outputs": {"ref": {
                    "type": "duckdb", "path": str(db), "schema": "main", "threads": 4}}}},
                indent=2,
            )
        )
        if setup is not None:
            with duckdb.connect(str(db)) as con:
                try:
                    con.execute(setup)
                except duckdb.Error as e:
                    fail(f"the setup SQL {a.setup_sql} failed in DuckDB: {e}")

        if (project / "packages.yml").is_file():
            run_dbt(["deps"], project, tmp)
        run_dbt(["build"], project, tmp)
        for d in a.then_copy:
            shutil.copytree(d, project, dirs_exist_ok=True)
            run_dbt(["build"], project, tmp)

        manifest = json.loads((project / "target" / "manifest.json").read_text())
        a.out_dir.mkdir(parents=True, exist_ok=True)
        relations = []
        with duckdb.connect(str(db), read_only=True) as con:
            for uid, node in sorted(manifest["nodes"].items()):
                if node["resource_type"] not in EXPORTED:
                    continue
                if node.get("config", {}).get("materialized") == "ephemeral":
                    continue
                relation = node.get("relation_name")
                if not relation:
                    fail(f"{uid} has no relation_name in the manifest")
                parquet = (a.out_dir / f"{uid}.parquet").resolve()
                try:
                    con.execute(f"copy (select * from {relation}) to '{parquet}' (format parquet)")
                    columns = [[c[0], c[1]] for c in con.execute(f"describe select * from {relation}").fetchall()]
                except duckdb.Error as e:
                    fail(f"cannot export {uid} ({relation}): {e}")
                relations.append({
                    "unique_id": uid,
                    "name": node["name"],
                    "resource_type": node["resource_type"],
                    "parquet": str(parquet),
                    "columns": columns,
                })
        (a.out_dir / "relations.json").write_text(json.dumps(relations, indent=2) + "\n")
        print(f"exported {len(relations)} relation(s) to {a.out_dir}")
    finally:
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
