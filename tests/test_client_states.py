"""Client states are held packed (clients of one structure share a buffer per dtype, a row each) and read back as
the same nested state."""

import io
import pickle

import pytest
import torch

from bench.fed.client_states import ClientStates, Slab, flatten


def sample_state(scale: float) -> dict:
    return {"heads": {"w": torch.arange(12.0).view(3, 4) * scale, "b": torch.tensor([1.0, 2.0, 3.0]),
                      "steps": torch.tensor(5)},
            "history": [torch.tensor([True, False]), 0.25, "tag"], "pair": (torch.zeros(0, 5), None)}


def assert_same_state(got, expected) -> None:
    assert type(got) is type(expected)
    if isinstance(expected, torch.Tensor):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert torch.equal(got, expected)
    elif isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            assert_same_state(got[key], expected[key])
    elif isinstance(expected, list | tuple):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert_same_state(g, e)
    else:
        assert got == expected


def test_slab_round_trip_keeps_structure_dtypes_and_values():
    state = sample_state(2.0)
    layout, groups, leaves = flatten(state)
    slab = Slab(layout)
    assert [b.dtype for b in slab.buffers] == [torch.float32, torch.int64, torch.bool]
    assert [b.shape[1] for b in slab.buffers] == [12 + 3 + 0, 1, 2]
    assert leaves == (0.25, "tag", None)
    assert slab.take() == 0
    slab.write(0, groups)
    rows = [slab.take() for _ in range(4)]
    assert rows == [1, 2, 3, 4] and slab.capacity == 8  # grown from 4 rows on the fifth
    slab.write(3, flatten(sample_state(3.0))[1])
    assert_same_state(slab.read(0, leaves), state)  # kept through the growth
    assert_same_state(slab.read(3, leaves), sample_state(3.0))
    slab.release(1)
    assert slab.take() == 1 and slab.take() == 5


def test_clients_share_one_layout_and_keep_their_own_values():
    states = ClientStates(sample_state(float(c)) for c in range(3))
    assert len(states) == 3
    assert states[2]["heads"]["w"][2, 3].item() == 22.0
    assert len(states._slabs) == 1
    states[1] = sample_state(10.0)
    assert states[1]["heads"]["w"][0, 1].item() == 10.0
    assert states[0]["heads"]["w"][0, 1].item() == 0.0
    assert_same_state(list(states)[2], sample_state(2.0))


def test_a_client_whose_structure_changes_moves_to_another_slab_and_frees_its_row():
    states = ClientStates([{"w": torch.ones(2)}, {"w": torch.full((2,), 2.0)}])
    states[0] = {"w": torch.ones(3), "n": 4}
    states[1] = {"w": torch.full((2,), 5.0)}
    assert len(states._slabs) == 2
    assert_same_state(states[0], {"w": torch.ones(3), "n": 4})
    assert states[1]["w"].tolist() == [5.0, 5.0]
    states[0] = {"w": torch.full((2,), 7.0)}
    assert states._slots[0][1] == 0  # the row it left behind
    assert [s["w"].tolist() for s in states] == [[7.0, 7.0], [5.0, 5.0]]


def test_states_are_stored_and_read_as_copies():
    original = sample_state(1.0)
    states = ClientStates([original])
    original["heads"]["b"].zero_()
    assert states[0]["heads"]["b"].tolist() == [1.0, 2.0, 3.0]
    states[0]["heads"]["b"].add_(1.0)
    assert states[0]["heads"]["b"].tolist() == [1.0, 2.0, 3.0]


def test_a_read_state_pickles_to_its_own_size():
    """Views into the packed buffer would each pickle the whole buffer (what a worker process is sent)."""
    heads = {f"w{k}": torch.randn(10, 64) for k in range(6)}
    assert len(pickle.dumps(ClientStates([heads])[0])) < 1.2 * len(pickle.dumps(heads))


def test_states_read_back_save_and_load_with_weights_only():
    states = ClientStates(sample_state(float(c)) for c in range(2))
    buffer = io.BytesIO()
    torch.save(list(states), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    for c in range(2):
        assert_same_state(loaded[c], sample_state(float(c)))


def test_tensor_that_requires_grad_is_stored_detached():
    weight = torch.ones(3, requires_grad=True)
    stored = ClientStates([{"w": weight * 2}])[0]["w"]
    assert not stored.requires_grad and stored.tolist() == [2.0, 2.0, 2.0]


def test_tensors_off_the_cpu_rejected():
    with pytest.raises(ValueError, match="client states must hold tensors on cpu, got one on meta"):
        ClientStates([{"w": torch.ones(2, device="meta")}])
