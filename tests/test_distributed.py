"""Several tuning processes share one Optuna study through PostgreSQL."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from glob import glob

import optuna
import pytest
from conftest import ROOT

from convtune.tuner import records


@pytest.fixture(scope="module")
def server_url():
    """The server CI gives (CONVTUNE_TEST_POSTGRES), else one started here and
    stopped after the tests."""
    url = os.environ.get("CONVTUNE_TEST_POSTGRES")
    if url:
        yield url
        return
    if not glob("/usr/lib/postgresql/*/bin/initdb"):
        if os.environ.get("CI"):
            pytest.fail("CI must provide PostgreSQL (.ci/run starts one; CONVTUNE_TEST_POSTGRES is unset)")
        pytest.skip("no PostgreSQL server and no initdb on this machine")
    folder = tempfile.mkdtemp(prefix="convtune-pg.")
    env = dict(os.environ, CONVTUNE_PG_PORT=str(55000 + os.getpid() % 400), CONVTUNE_PG_DIR=folder)
    yield subprocess.run([str(ROOT / ".ci" / "start-postgres")], capture_output=True, text=True, check=True,
                         env=env).stdout.strip()
    subprocess.run([str(ROOT / ".ci" / "stop-postgres"), folder], check=True)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database(server_url):
    """A fresh database per test, so reruns never see an earlier study."""
    import psycopg

    name = f"convtune_{uuid.uuid4().hex[:10]}"
    base = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield server_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_two_workers_tune_one_study(database, tmp_path):
    log = tmp_path / "shared.jsonl"
    trials = 10
    workers = [subprocess.Popen(
        [sys.executable, "-m", "convtune.tuner.cli", "tune", "--conv", "N=1,C=8,H=8,W=8,K=16,R=3,S=3,pad=1",
         "--strategy", "random", "--seed", str(seed), "--trials", str(trials), "--storage", database,
         "--log", str(log), "--repeats", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outputs = [w.communicate(timeout=900) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err
    logged = list(records.read(log))
    keys = [json.dumps(r.config, sort_keys=True) for r in logged]
    assert len(keys) == len(set(keys)), "a config was measured twice"
    (summary,) = optuna.get_all_study_summaries(storage=database)
    study = optuna.load_study(study_name=summary.study_name, storage=database)
    measured = [t for t in study.trials if t.user_attrs.get("measured")]
    assert len(measured) >= trials and len(logged) == len(measured)
    assert {t.user_attrs["config"] for t in measured} == set(keys)  # every result is in the log
    assert len({t.user_attrs["pid"] for t in measured}) == 2  # both workers contributed
    assert study.best_value == pytest.approx(max(r.gflops for r in logged))
