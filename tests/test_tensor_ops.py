import pytest
import torch

from bench.ground.tensor_ops import (
    cosine_similarity_matrix,
    flatten,
    normalized_weights,
    project_simplex,
    state_nbytes,
    weighted_average,
)


def test_weighted_average_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(9)}
    out = weighted_average([a, b], [1, 3])
    assert torch.allclose(out["w"], torch.tensor([2.5, 5.0]))
    assert out["n"].item() == 3  # integer buffers are not averaged


@pytest.mark.parametrize(
    ("v", "expected"),
    [
        ([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]),  # already on the simplex
        ([1.0, 1.0], [0.5, 0.5]),  # theta = 0.5
        ([2.0, 0.0, 0.0], [1.0, 0.0, 0.0]),  # theta = 1
        ([0.5, 0.4, -1.0], [0.55, 0.45, 0.0]),  # theta = -0.05 on the first two
        ([3.0, 2.5, 0.0, 2.0], [0.75, 0.25, 0.0, 0.0]),  # theta = 2.25
    ],
)
def test_project_simplex_cases_solved_by_hand(v, expected):
    w = project_simplex(torch.tensor(v, dtype=torch.float64))
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert abs(float(w.sum()) - 1.0) < 1e-12


def test_project_simplex_is_the_closest_point():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(6, generator=gen, dtype=torch.float64)
    w = project_simplex(v)
    for _ in range(200):  # random points of the simplex are never closer
        q = torch.rand(6, generator=gen, dtype=torch.float64)
        q = q / q.sum()
        assert (v - w).norm() <= (v - q).norm() + 1e-12


def test_cosine_similarity_matrix():
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [0.0, 0.0]])
    s = cosine_similarity_matrix(v)
    assert s[0, 0] == pytest.approx(1.0)
    assert s[0, 1] == pytest.approx(0.0)
    assert s[0, 2] == pytest.approx(2 ** -0.5)
    assert s[3].abs().max() == 0.0


def test_flatten_and_nbytes():
    d = {"b": torch.ones(2, 3), "a": torch.zeros(4, dtype=torch.float16), "i": torch.tensor(5)}
    assert flatten(d).shape == (10,)
    assert state_nbytes(d) == 6 * 4 + 4 * 2 + 8


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        normalized_weights([1.0, -1.0])
    with pytest.raises(ValueError, match="2 dicts but 1 weights"):
        weighted_average([{}, {}], [1.0])
