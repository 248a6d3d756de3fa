"""What ``release_stale`` tells the user to do."""

from __future__ import annotations

from curator.runner.freshness import _stale_remedy


def test_a_new_stage_version_is_said_to_rerun_every_case_of_that_stage() -> None:
    plain = _stale_remedy(["qc's settings changed (min_cohort: 5 -> 6)"], "p3.yaml")
    assert "`curator run p3.yaml`" in plain and "cases whose inputs did not change come from the cache" in plain and "every case" not in plain
    bumped = _stale_remedy(["preprocess ran with stage version 6 (this curator's is 7)",
                            "qc ran with stage version 3 (this curator's is 4)", "pseudolabel ran again after qc"], "pipeline.yaml")
    assert "preprocess, qc re-run every case" in bumped
    assert _stale_remedy(["qc ran with stage version 3 (this curator's is 4)"], "pipeline.yaml").count("qc re-runs every case") == 1
