"""The bad-input corpus through `curator run`: every input is ingested or a problem row."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curator.problem_kinds import PROBLEM_KINDS
from curator.release.query import Release
from curator.testing.badinputs import write_corpus
from curator.testing.pipelines import make_pipeline

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("bad")
    corpus = write_corpus(tmp / "raw")
    pipe = make_pipeline(tmp, corpus.sources, stages={"ingest": {"max_voxels": 2_000_000}}, workers=2)
    cfg = yaml.safe_load(pipe.read_text())  # the corpus plants sources that give no case, on purpose
    cfg["release"]["allow_missing_sources"] = True
    pipe.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "curator", "run", str(pipe), "--no-progress"], env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    return corpus, out, tmp / "releases" / "test" / "0.1.0"


def test_run_finishes_without_a_traceback(corpus_run) -> None:  # type: ignore[no-untyped-def]
    _, out, release = corpus_run
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr + out.stdout
    assert (release / "release.json").exists()


def test_every_planted_input_is_a_problem_of_its_kind(corpus_run) -> None:  # type: ignore[no-untyped-def]
    corpus, _, release = corpus_run
    rows = Release(release).sql("select path, kind, severity, message from problems").fetchall()
    by_path: dict[str, list[str]] = {}
    for path, kind, _, message in rows:
        by_path.setdefault(path, []).append(kind)
        assert "What to do:" in message
        assert kind in PROBLEM_KINDS, kind
    missing = {p: k for p, k in corpus.expected.items() if k not in by_path.get(p, [])}
    assert not missing, {p: (k, by_path.get(p)) for p, k in missing.items()}
    assert len(set(corpus.expected.values())) >= 25


def test_good_cases_survive_next_to_bad_ones(corpus_run) -> None:  # type: ignore[no-untyped-def]
    corpus, _, release = corpus_run
    ids = {r[0] for r in Release(release).sql("select case_id from cases").fetchall()}
    assert set(corpus.ok_cases) <= ids


def test_every_raised_kind_is_documented() -> None:
    src = "\n".join(p.read_text() for p in (ROOT / "curator").rglob("*.py"))
    raised = set(re.findall(r'(?:Error|InputError|ReadError|GeometryError|LabelError)\(\s*"([a-z_0-9]+)"', src))
    raised -= {"config_error", "registry_error", "release_error", "release_exists", "stage_error",
               "workspace_error", "workspace_locked", "store_error", "store_missing", "query_error",
               "split_leakage", "card_invalid", "release_corrupt", "release_stale", "release_incomplete"}  # release-level: stop a release, not a row
    undocumented = sorted(k for k in raised if k not in PROBLEM_KINDS)
    assert not undocumented
