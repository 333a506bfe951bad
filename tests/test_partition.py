import logging
import math

import numpy as np
import pytest
import torch

from bench.data.partition import (
    ClientIndices,
    Partition,
    PartitionError,
    PartitionSpec,
    cache_path,
    class_histogram,
    dirichlet_partition,
    format_histogram,
    label_entropy,
    load_or_create_partition,
)
from bench.track.artifacts import plot_partition_heatmap

NUM_CLASSES = 10
LABELS = torch.arange(NUM_CLASSES).repeat_interleave(500)  # 5000 samples, 500 per class


def spec(**overrides) -> PartitionSpec:
    settings = dict(dataset="synthetic", num_clients=20, alpha=0.5, seed=0)
    settings.update(overrides)
    return PartitionSpec(**settings)


def mean_entropy(alpha: float, seed: int) -> float:
    partition = dirichlet_partition(LABELS, NUM_CLASSES, spec(alpha=alpha, seed=seed))
    return float(label_entropy(class_histogram(partition, LABELS, NUM_CLASSES)).mean())


def test_every_sample_in_exactly_one_client_and_split():
    partition = dirichlet_partition(LABELS, NUM_CLASSES, spec())
    every = torch.cat([t for split in (partition.train, partition.val, partition.test) for t in split])
    assert every.dtype == torch.int64
    assert len(every) == len(LABELS)
    assert torch.equal(every.sort().values, torch.arange(len(LABELS)))
    assert partition.sizes().sum() == len(LABELS)
    assert partition.sizes().shape == (20, 3)


def test_client_indices_join_the_three_splits():
    partition = dirichlet_partition(LABELS, NUM_CLASSES, spec())
    joined = partition.client_indices(3)
    assert len(joined) == partition.sizes()[3].sum()
    assert set(joined.tolist()) == set(
        partition.train[3].tolist() + partition.val[3].tolist() + partition.test[3].tolist()
    )
    with pytest.raises(IndexError):
        partition.client_indices(20)


def test_client_indices_are_views_of_one_flat_tensor():
    indices = ClientIndices(torch.tensor([4, 7, 1, 2, 9]), [2, 0, 3])
    assert len(indices) == 3
    assert [t.tolist() for t in indices] == [[4, 7], [], [1, 2, 9]]
    assert indices[-1].tolist() == [1, 2, 9]
    assert indices.sizes().tolist() == [2, 0, 3]
    assert indices[2].untyped_storage().data_ptr() == indices.flat.untyped_storage().data_ptr()
    with pytest.raises(IndexError, match="client must be in 0..2, got 3"):
        indices[3]
    with pytest.raises(IndexError):
        indices[-4]
    with pytest.raises(ValueError, match="client sizes add up to 4 but there are 5 indices"):
        ClientIndices(torch.arange(5), [1, 3])


def test_same_seed_identical_different_seed_different():
    first = dirichlet_partition(LABELS, NUM_CLASSES, spec(seed=7))
    again = dirichlet_partition(LABELS, NUM_CLASSES, spec(seed=7))
    other = dirichlet_partition(LABELS, NUM_CLASSES, spec(seed=8))
    assert first == again
    assert first != other
    assert not np.array_equal(first.sizes(), other.sizes())


def test_independent_of_global_rng_state():
    np.random.seed(1)
    torch.manual_seed(1)
    first = dirichlet_partition(LABELS, NUM_CLASSES, spec())
    np.random.seed(2)
    torch.manual_seed(2)
    assert first == dirichlet_partition(LABELS, NUM_CLASSES, spec())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alpha_controls_label_skew(seed):
    uniform = math.log(NUM_CLASSES)
    # Calibrated on these labels (20 clients): alpha=1000 gives ~0.9997·log 10, alpha=0.1 gives ~0.37-0.41.
    assert mean_entropy(1000.0, seed) > 0.95 * uniform
    assert mean_entropy(0.1, seed) < 0.5 * uniform


def test_large_alpha_gives_nearly_equal_client_sizes():
    sizes = dirichlet_partition(LABELS, NUM_CLASSES, spec(alpha=1000.0)).sizes().sum(axis=1)
    assert sizes.min() > 0.9 * 250 and sizes.max() < 1.1 * 250


def test_balance_cap_respected():
    cap = 1.5
    partition = dirichlet_partition(LABELS, NUM_CLASSES, spec(alpha=0.1, balance_cap=cap))
    totals = partition.sizes().sum(axis=1)
    assert totals.max() <= cap * len(LABELS) / 20
    assert totals.sum() == len(LABELS)
    uncapped = dirichlet_partition(LABELS, NUM_CLASSES, spec(alpha=0.1)).sizes().sum(axis=1)
    assert uncapped.max() > cap * len(LABELS) / 20  # the cap did bind


def test_min_samples_respected():
    partition = dirichlet_partition(LABELS, NUM_CLASSES, spec(alpha=0.1, min_samples=60))
    assert partition.sizes().sum(axis=1).min() >= 60


def test_split_fractions_within_one_sample_per_client():
    fractions = (0.6, 0.15, 0.25)
    partition = dirichlet_partition(LABELS, NUM_CLASSES, spec(split=fractions))
    sizes = partition.sizes()
    expected = sizes.sum(axis=1, keepdims=True) * np.array(fractions)
    assert np.abs(sizes - expected).max() <= 1
    assert sizes[:, 0].min() >= 1 and sizes[:, 2].min() >= 1


def test_split_drawn_from_client_share():
    partition = dirichlet_partition(LABELS, NUM_CLASSES, spec(alpha=0.1))
    train = class_histogram(partition, LABELS, NUM_CLASSES, split="train")
    test = class_histogram(partition, LABELS, NUM_CLASSES, split="test")
    total = class_histogram(partition, LABELS, NUM_CLASSES)
    assert np.array_equal(train + test + class_histogram(partition, LABELS, NUM_CLASSES, "val"), total)
    # a class a client does not hold never shows up in its test split
    assert not np.any((total == 0) & (test > 0))


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (dict(num_clients=0), "num_clients"),
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=-1.0), "alpha"),
        (dict(alpha=float("inf")), "alpha"),
        (dict(split=(0.7, 0.1)), "split"),
        (dict(split=(0.7, 0.2, 0.2)), "split"),
        (dict(split=(1.1, -0.1, 0.0)), "split"),
        (dict(split=(0.8, 0.2, 0.0)), "split"),
        (dict(min_samples=2), "min_samples"),
        (dict(balance_cap=0.5), "balance_cap"),
        (dict(max_retries=0), "max_retries"),
    ],
)
def test_impossible_settings_rejected_up_front(overrides, named):
    with pytest.raises(PartitionError, match=named):
        spec(**overrides)


def test_min_samples_just_large_enough_for_split_accepted():
    # With (0.7, 0.1, 0.2), 3 samples split 2/0/1 while 2 samples split 1/1/0 (no test sample).
    assert spec(min_samples=3).min_samples == 3
    with pytest.raises(PartitionError, match="raise min_samples to 3"):
        spec(min_samples=2)
    # With (0.8, 0.1, 0.1), 5 samples split 4/1/0 and 6 split 5/0/1.
    with pytest.raises(PartitionError, match="raise min_samples to 6"):
        spec(min_samples=5, split=(0.8, 0.1, 0.1))


def test_too_many_clients_for_min_samples_rejected():
    with pytest.raises(PartitionError, match="min_samples"):
        dirichlet_partition(LABELS, NUM_CLASSES, spec(num_clients=600, min_samples=10))


def test_cap_too_tight_for_dataset_rejected():
    labels = torch.arange(NUM_CLASSES).repeat_interleave(21)  # 210 samples: 20 clients × floor(10.5) < 210
    with pytest.raises(PartitionError, match="balance_cap"):
        dirichlet_partition(labels, NUM_CLASSES, spec(balance_cap=1.0))


def test_bad_labels_rejected():
    with pytest.raises(PartitionError, match="labels"):
        dirichlet_partition(LABELS + 1, NUM_CLASSES, spec())
    with pytest.raises(PartitionError, match="integer"):
        dirichlet_partition(LABELS.float(), NUM_CLASSES, spec())


def test_bounded_retries_raise_with_advice():
    # Two classes, tiny alpha: each class goes almost wholly to one client, so at most two of the ten
    # clients can reach min_samples in any draw.
    labels = torch.arange(2).repeat_interleave(50)
    hopeless = spec(num_clients=10, alpha=1e-3, min_samples=5, max_retries=5)
    with pytest.raises(PartitionError) as raised:
        dirichlet_partition(labels, 2, hopeless)
    message = str(raised.value)
    assert "5 tries" in message
    assert "smallest client had" in message
    for advice in ("lower min_samples", "raise alpha", "fewer clients"):
        assert advice in message


def test_content_hash_stable_and_sensitive():
    assert spec().content_hash() == spec().content_hash()
    assert len(spec().content_hash()) == 12
    assert spec().content_hash() == spec(max_retries=7).content_hash()
    hashes = {
        spec(**o).content_hash()
        for o in [{}, {"alpha": 0.3}, {"seed": 1}, {"num_clients": 10}, {"dataset": "x"}, {"min_samples": 20}]
        + [{"split": (0.8, 0.1, 0.1)}, {"balance_cap": 2.0}]
    }
    assert len(hashes) == 8


def test_cache_round_trip(tmp_path):
    created = load_or_create_partition(LABELS, NUM_CLASSES, spec(), tmp_path)
    path = cache_path(tmp_path, spec())
    assert path.exists() and created.hash in path.name
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    loaded = load_or_create_partition(LABELS, NUM_CLASSES, spec(), tmp_path)
    assert isinstance(loaded, Partition)
    assert loaded == created


def test_cache_is_used_when_valid(tmp_path):
    created = load_or_create_partition(LABELS, NUM_CLASSES, spec(), tmp_path)
    mtime = cache_path(tmp_path, spec()).stat().st_mtime_ns
    assert load_or_create_partition(LABELS, NUM_CLASSES, spec(), tmp_path) == created
    assert cache_path(tmp_path, spec()).stat().st_mtime_ns == mtime


def test_corrupt_cache_rebuilt(tmp_path, caplog):
    expected = dirichlet_partition(LABELS, NUM_CLASSES, spec())
    path = cache_path(tmp_path, spec())
    path.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING):
        rebuilt = load_or_create_partition(LABELS, NUM_CLASSES, spec(), tmp_path)
    assert rebuilt == expected
    assert "rebuilding" in caplog.text
    assert load_or_create_partition(LABELS, NUM_CLASSES, spec(), tmp_path) == expected


def test_empty_cache_file_is_reported_as_empty_and_rebuilt(tmp_path, caplog):
    path = cache_path(tmp_path, spec())
    path.write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        rebuilt = load_or_create_partition(LABELS, NUM_CLASSES, spec(), tmp_path)
    assert rebuilt == dirichlet_partition(LABELS, NUM_CLASSES, spec())
    assert f"partition cache {path} is unusable (an empty file); rebuilding it" in caplog.text
    assert path.stat().st_size > 0


def test_cache_with_one_tensor_per_client_rebuilt(tmp_path, caplog):
    """Caches written before the flat layout (a list of per-client tensors, no sizes) are redrawn, not misread."""
    expected = load_or_create_partition(LABELS, NUM_CLASSES, spec(), tmp_path)
    path = cache_path(tmp_path, spec())
    payload = torch.load(path, weights_only=True)
    for name in ("train", "val", "test"):
        payload[name] = list(expected.split_indices(name))
        del payload[f"{name}_sizes"]
    torch.save(payload, path)
    with caplog.at_level(logging.WARNING):
        assert load_or_create_partition(LABELS, NUM_CLASSES, spec(), tmp_path) == expected
    assert "unusable (written in the older layout of one index tensor per client); rebuilding" in caplog.text


def test_cache_for_other_labels_rebuilt(tmp_path, caplog):
    load_or_create_partition(LABELS, NUM_CLASSES, spec(), tmp_path)
    shuffled = LABELS[torch.randperm(len(LABELS), generator=torch.Generator().manual_seed(0))]
    with caplog.at_level(logging.WARNING):
        rebuilt = load_or_create_partition(shuffled, NUM_CLASSES, spec(), tmp_path)
    assert "different labels" in caplog.text
    assert rebuilt == dirichlet_partition(shuffled, NUM_CLASSES, spec())


def test_histogram_and_entropy_values():
    hist = np.array([[5, 5, 0], [9, 0, 0], [0, 0, 0], [1, 1, 1]])
    assert np.allclose(label_entropy(hist), [math.log(2), 0.0, 0.0, math.log(3)])
    partition = dirichlet_partition(LABELS, NUM_CLASSES, spec())
    counts = class_histogram(partition, LABELS, NUM_CLASSES)
    assert counts.shape == (20, NUM_CLASSES)
    assert np.array_equal(counts.sum(axis=0), np.full(NUM_CLASSES, 500))
    assert np.array_equal(counts.sum(axis=1), partition.sizes().sum(axis=1))


def test_format_histogram_table():
    text = format_histogram(np.array([[3, 0], [10, 2]]))
    assert text.splitlines() == [
        "client total c0 c1",
        "     0     3  3  0",
        "     1    12 10  2",
    ]


def test_heatmap_written(tmp_path):
    hist = class_histogram(dirichlet_partition(LABELS, NUM_CLASSES, spec()), LABELS, NUM_CLASSES)
    path = plot_partition_heatmap(hist, tmp_path / "plots" / "heatmap.png", title="alpha=0.5")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000
