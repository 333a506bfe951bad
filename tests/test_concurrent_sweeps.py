"""Two sweeps of one grid started together on one store run each grid point once, on a store that exists and on one
that does not yet; the report says when an experiment holds duplicate runs anyway."""

import os
import re
import shutil
from collections import Counter

import pytest
from helpers import start_sweep, tiny_base, write_sweep
from mlflow.tracking import MlflowClient

from bench.record_names import OWNER_TAG
from bench.report.collect import collect_runs, duplicates_note
from bench.track.claim import ClaimedElsewhere, claim_point
from bench.track.mlflow_tracker import get_or_create_experiment
from bench.track.owner import this_process

POINTS = 3


@pytest.mark.parametrize("store", ["existing", "fresh"])
def test_two_sweeps_of_one_grid_started_together_run_each_point_once(store, tmp_path, empty_mlflow_db):
    db = tmp_path / "mlflow.db"
    if store == "existing":
        shutil.copyfile(empty_mlflow_db, db)
    uri = f"sqlite:///{db}"
    path = write_sweep(tmp_path, "twice", experiment="twice", grid={"seed": list(range(POINTS))})
    sweeps = [start_sweep(path, uri) for _ in range(2)]
    outputs = [sweep.communicate(timeout=600) for sweep in sweeps]
    for sweep, (_, err) in zip(sweeps, outputs, strict=True):
        assert sweep.returncode == 0, err
        assert "Traceback" not in err, err
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("twice").experiment_id
    finished = [r for r in client.search_runs([exp], "attributes.status = 'FINISHED'")
                if "config_hash" in r.data.tags]
    per_point = Counter(r.data.tags["config_hash"] for r in finished)
    assert len(per_point) == POINTS and set(per_point.values()) == {1}, per_point
    assert not client.search_runs([exp], "attributes.status != 'FINISHED'")  # nothing FAILED, KILLED or RUNNING
    ran = [int(re.search(r"^sweep twice: (\d+) ran, ", out, re.M).group(1)) for out, _ in outputs]
    assert sum(ran) == POINTS  # between them the two sweeps ran every point, each once
    parents = client.search_runs([exp], "tags.`cafebench.parent` = 'sweep:twice'")
    assert len(parents) == 1  # created once, reopened by the other


def test_a_point_running_in_a_live_process_or_finished_is_claimed(tmp_path, tracking_uri):
    client = MlflowClient(tracking_uri)
    exp = get_or_create_experiment(client, "claims")
    run = client.create_run(exp, tags={"config_hash": "abc", OWNER_TAG: this_process()})
    with pytest.raises(ClaimedElsewhere, match=f"run {run.info.run_id} is running it in process {os.getpid()}"):
        with claim_point(tracking_uri, exp, "abc"):
            pytest.fail("the claim should have been refused")
    with claim_point(tracking_uri, exp, "abc/ablation"):  # another role of the same config is another point
        pass
    client.set_terminated(run.info.run_id, "KILLED")  # interrupted: the point is free to resume
    with claim_point(tracking_uri, exp, "abc"):
        pass
    client.set_terminated(run.info.run_id, "FINISHED")
    with pytest.raises(ClaimedElsewhere, match="has FINISHED it"):
        with claim_point(tracking_uri, exp, "abc"):
            pass
    assert (tmp_path / "mlflow.db.lock").is_file()  # the lock lives beside the store


def test_the_report_counts_duplicate_runs(tmp_path, tracking_uri):
    from bench.sweep import load_sweep, run_sweep

    base = tiny_base(tmp_path)
    base["train"]["rounds"] = 1
    sweep = load_sweep(write_sweep(tmp_path, "dup", base, experiment="dup", grid={"seed": [0]}))
    assert run_sweep(sweep).done == 1
    data = collect_runs("dup", tmp_path / "artifacts")
    assert data.duplicates == 0 and duplicates_note(data) == ""
    client = MlflowClient(tracking_uri)
    (finished,) = client.search_runs([client.get_experiment_by_name("dup").experiment_id],
                                     "tags.config_hash != ''")
    client.delete_tag(finished.info.run_id, "config_hash")  # the sweep no longer knows it: it runs the point again
    assert run_sweep(sweep).done == 1
    client.set_tag(finished.info.run_id, "config_hash", sweep.configs[0].content_hash())
    data = collect_runs("dup", tmp_path / "artifacts")
    assert data.duplicates == 1
    assert duplicates_note(data) == (" Finished runs that repeat the config and role of another run of this "
                                     "experiment: 1; the report counts the latest of each.")
