"""The exact minimiser of a convex quadratic form over the probability simplex (FedPAC's classifier weights).

``argmin_{w ≥ 0, Σw = 1} wᵀ M w`` for a symmetric positive semi-definite ``M`` of a few dozen rows at most,
solved by a primal active-set method: on the current support ``S`` the equality-constrained problem is a
linear (KKT) system, ``[2 M_SS, 1; 1ᵀ, 0]·[w_S; −ν] = [0; 1]``; a step towards its solution stops at the first
weight that would turn negative (which then leaves the support), and once the step is zero a coordinate
outside ``S`` whose multiplier ``(2 M w)_j − ν`` is negative enters it. Every iteration decreases the
objective or changes the support, and the method ends when the KKT conditions hold, which for a convex
problem means the minimum is exact (up to floating-point rounding), not approximate as gradient steps are.
"""

from __future__ import annotations

import torch

#: Relative tolerance of the optimality and step tests, in units of the matrix's largest entry.
TOLERANCE = 1e-12


def minimize_on_simplex(matrix: torch.Tensor) -> torch.Tensor:
    """``argmin_{w ≥ 0, Σw = 1} wᵀ M w`` (float64, on ``M``'s device), exact; ``M`` symmetric positive
    semi-definite. Solved on the CPU: the problem is tiny, and the ``gelsd`` least-squares driver is CPU-only."""
    m = matrix.double().cpu()
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"minimize_on_simplex expects a non-empty square matrix, got {tuple(m.shape)}")
    m = (m + m.T) / 2
    n = m.shape[0]
    scale = float(m.abs().max()) or 1.0
    tol = TOLERANCE * scale
    start = int(torch.argmin(m.diagonal()))
    w = torch.zeros(n, dtype=torch.float64)
    w[start] = 1.0
    support = [start]
    for _ in range(50 * n + 50):
        target, nu = support_solution(m, support)
        step = torch.zeros(n, dtype=torch.float64)
        step[support] = target - w[support]
        if float(step.abs().max()) <= step_tolerance(target):
            multipliers = 2.0 * (m @ w) - nu
            outside = [j for j in range(n) if j not in support]
            entering = min(outside, key=lambda j: float(multipliers[j]), default=None)
            if entering is None or float(multipliers[entering]) >= -tol:
                return w.to(matrix.device)
            support.append(entering)
            continue
        ratio, blocking = 1.0, None
        for j in support:
            if step[j] < 0 and -float(w[j] / step[j]) < ratio:
                ratio, blocking = -float(w[j] / step[j]), j
        w = w + ratio * step
        if blocking is not None:
            w[blocking] = 0.0
            support.remove(blocking)
        w = w.clamp_min(0.0)
        w = w / w.sum()
    raise RuntimeError(f"minimize_on_simplex did not reach the KKT conditions for a {n}×{n} matrix")


def step_tolerance(target: torch.Tensor) -> float:
    """The largest step that counts as zero: 1e-12, or the support solution's own rounding error where that is
    larger. The KKT system of a matrix with large entries is solved only to a relative precision, so the solution's
    weights may sum to 1 ± ε with ε above 1e-12; the iterate, renormalised to sum 1 after each step, then stays
    about ε away from it, and a fixed 1e-12 test would step towards it forever."""
    return max(1e-12, 2.0 * abs(float(target.sum()) - 1.0))


def support_solution(m: torch.Tensor, support: list[int]) -> tuple[torch.Tensor, float]:
    """Minimiser of ``wᵀ M w`` with ``Σw = 1`` over the coordinates in ``support`` (others 0), and its ν.

    Solves the KKT system in the least-squares sense, so a singular ``M_SS`` gives the minimum-norm solution.
    """
    k = len(support)
    kkt = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    kkt[:k, :k] = 2.0 * m[support][:, support]
    kkt[:k, k] = -1.0
    kkt[k, :k] = 1.0
    rhs = torch.zeros(k + 1, dtype=torch.float64)
    rhs[k] = 1.0
    solution = torch.linalg.lstsq(kkt, rhs.unsqueeze(1), driver="gelsd").solution[:, 0]
    return solution[:k], float(solution[k])
