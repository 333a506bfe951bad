"""Evaluation records: many clients' records in flat arrays, filled in place batch by batch."""

import numpy as np
import pytest
import torch

from bench.data.batching import BatchMaker
from bench.data.dataset import Dataset
from bench.measure.accuracy import EVAL_SHAPE_MULTIPLE, exit_outcomes_of, exit_records, padded_forward
from bench.measure.dynamic import ClientRecords
from bench.models import build_model


def test_client_records_views_write_through_and_keep_each_clients_shape():
    records = ClientRecords({0: (3, 2), 5: (2, 1), 7: (0, 3)})
    assert len(records) == 3 and list(records) == [0, 5, 7] and 5 in records and 1 not in records
    assert records[0].confidence.shape == (3, 2) and records[5].confidence.shape == (2, 1)
    assert records[7].num_samples == 0 and records[7].num_exits == 3
    view = records[5]
    view.confidence[:] = [[0.25], [0.75]]
    view.correct[1] = True
    assert records[5].confidence[:, 0].tolist() == [0.25, 0.75]
    assert records[5].exit_accuracy.tolist() == [0.5]
    assert records[0].confidence.sum() == 0  # the neighbours are untouched


def two_exit_predictor(x: torch.Tensor) -> list[torch.Tensor]:
    """Exit 1 always predicts class 0 with certainty; exit 2 predicts class (first pixel > 0)."""
    n = x.shape[0]
    first = torch.zeros(n, 2)
    first[:, 0] = 10.0
    second = torch.stack([torch.zeros(n), (x.reshape(n, -1)[:, 0] > 0).float() * 10.0 - 5.0], dim=1)
    return [first, second]


@pytest.fixture
def batches() -> BatchMaker:
    x = torch.zeros(10, 1, 2, 2, dtype=torch.uint8)
    x[5:, 0, 0, 0] = 255
    y = torch.tensor([0] * 5 + [1] * 5)
    return BatchMaker(Dataset("toy", x, y, 2, mean=(0.0,), std=(1.0,)))


def test_records_written_in_place_equal_the_returned_ones(batches):
    idx = torch.arange(10)
    expected = exit_records(two_exit_predictor, batches, idx, batch_size=3)
    assert expected.exit_accuracy.tolist() == [0.5, 1.0]
    records = ClientRecords({0: (10, 2), 1: (4, 2)})
    records.write(0, *exit_outcomes_of(two_exit_predictor, batches, idx, batch_size=3))
    np.testing.assert_array_equal(records[0].confidence, expected.confidence)
    np.testing.assert_array_equal(records[0].correct, expected.correct)
    assert records[1].confidence.sum() == 0


def test_records_that_do_not_fit_rejected(batches):
    records = ClientRecords({0: (10, 3), 1: (4, 2)})
    outcomes = exit_outcomes_of(two_exit_predictor, batches, torch.arange(10), 4)
    with pytest.raises(ValueError, match=r"client 0 holds 10 samples × 3 exits, got records of shape \(10, 2\)"):
        records.write(0, *outcomes)
    with pytest.raises(ValueError, match=r"client 1 holds 4 samples × 2 exits, got records of shape \(10, 2\)"):
        records.write(1, *outcomes)


def test_evaluation_batches_run_padded_to_a_few_shapes_and_give_the_unpadded_logits():
    model = build_model("conv3", (1, 28, 28), 10).eval()
    seen: list[int] = []

    def predict(x: torch.Tensor) -> list[torch.Tensor]:
        seen.append(x.shape[0])
        return model(x)

    x = torch.randn(13, 1, 28, 28)
    with torch.no_grad():
        padded, plain = padded_forward(predict, x), model(x)
    assert EVAL_SHAPE_MULTIPLE == 8 and seen == [16]
    assert [z.shape for z in padded] == [z.shape for z in plain] == [torch.Size([13, 10])] * 3
    for got, expected in zip(padded, plain, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        padded_forward(predict, x[:8])
    assert seen[-1] == 8  # a multiple already: no padding


def test_a_predictor_that_drops_rows_is_reported():
    with pytest.raises(ValueError, match=r"returned \(5, 2\) logits at exit 1 for a batch of 8 inputs"):
        padded_forward(lambda x: [torch.zeros(5, 2)], torch.zeros(3, 4))
