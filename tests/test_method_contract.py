"""What the engine relies on around a method's hooks: the training settings it hands every method, read off the
config, and an ``aggregate`` it may call again, once per client, to test each client's local model."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import federation

from bench.config import apply_overrides, validate_config
from bench.fed.engine import Simulation
from bench.fed.executors import Job, run_local_update
from bench.methods.api import TrainSettings
from bench.methods.registry import available_methods


def same(a: object, b: object) -> bool:
    """Whether two states (nested dicts/lists of tensors, numbers and strings) hold equal values, bit for bit."""
    if isinstance(a, torch.Tensor):  # NaN equals NaN here: CAFEDistill's alignment scores start as NaN
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and bool((a == b).logical_or(a.isnan() & b.isnan()).all()))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_train_settings_are_the_config_s_train_section_read_by_name(tiny_config_data):
    fed = federation(tiny_config_data, "train.local_epochs=3", "train.batch_size=7", "train.lr=0.125",
                     "train.momentum=0.5", "train.weight_decay=0.001", "train.precision=bf16", "train.rounds=2")
    assert fed.method.ctx.train == TrainSettings(local_epochs=3, batch_size=7, lr=0.125, momentum=0.5,
                                                 weight_decay=0.001, precision="bf16")
    assert fed.method.ctx.rounds == 2


def test_same_tells_states_apart():
    state = {"model": {"w": torch.ones(2)}, "heads": [{"b": torch.zeros(1)}], "round": 1}
    assert same(state, copy.deepcopy(state))
    assert not same(state, {**state, "heads": [{"b": torch.ones(1)}]})
    assert not same(state, {**state, "round": 2})
    assert not same({"w": torch.ones(2)}, {"w": torch.ones(2, dtype=torch.float64)})
    assert same(torch.tensor([float("nan"), 1.0]), torch.tensor([float("nan"), 1.0]))
    assert not same(torch.tensor([float("nan"), 1.0]), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_aggregate_of_one_upload_is_repeatable_and_changes_neither_the_server_nor_the_uploads(
        tiny_config_data, name):
    overrides = [f"method.name={name}", "train.local_epochs=1"]
    sim = Simulation(validate_config(apply_overrides(tiny_config_data, overrides)))
    method, model, server = sim.fed.method, sim.fed.new_model(), sim.state.server
    uploads = {c: run_local_update(sim.fed, model, 0, Job(c, method.payload(0, c, server), sim.state.clients[c]))
               .upload for c in range(sim.fed.num_clients)}
    server_before, uploads_before = copy.deepcopy(server), copy.deepcopy({c: u.tensors for c, u in uploads.items()})
    method.aggregate(0, uploads, server)  # the round's aggregate, then each client's alone, as the engine does
    alone = [method.aggregate(0, {c: uploads[c]}, server) for c in uploads]
    again = [method.aggregate(0, {c: uploads[c]}, server) for c in uploads]
    assert same(server, server_before)
    assert same({c: u.tensors for c, u in uploads.items()}, uploads_before)
    assert all(same(a, b) for a, b in zip(alone, again, strict=True))
