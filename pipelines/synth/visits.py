"""The visits table: visit dates, SLEDAI-2K descriptors at screening and after infusion, serology, treatment and
the cells a site left empty."""

from __future__ import annotations

import numpy as np

from immunostrat.synth.sledai import (
    _DRAW_ORDER,
    _FILL_ORDER,
    _GREEDY_ORDER,
    _ONE_POINT,
    _ONE_POINT_P,
    _SCREEN_P_ARR,
    _SLEDAI,
    _W,
)


def _screening_descriptors(
    rng: np.random.Generator, clinical_part: np.ndarray, nephritis: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per subject, the 22 non-serology descriptors present at screening, summing to `clinical_part` points.

    Descriptors are drawn with the `_SCREEN_P` chances where they still fit, then topped up (`_FILL_ORDER`) to
    the exact total. Returns the (n, 24) presence matrix (serology columns false) and the points left over
    (0 for every subject unless the total cannot be reached).
    """
    n = clinical_part.size
    left = clinical_part.astype(np.int64).copy()
    present = np.zeros((n, len(_SLEDAI)), dtype=bool)
    u = rng.random((n, len(_SLEDAI)), dtype=np.float32)
    chance = _SCREEN_P_ARR[:, 1][None, :] * nephritis[:, None] + _SCREEN_P_ARR[:, 0][None, :] * ~nephritis[:, None]
    for k in _DRAW_ORDER:  # 22 descriptors, not subjects
        take = (u[:, k] < chance[:, k]) & (_W[k] <= left)
        if k == _DRAW_ORDER[-1]:  # keep one 1-point item free, so an odd remainder can always be settled
            take &= ~(present[:, _ONE_POINT].sum(axis=1) == _ONE_POINT.size - 1)
        present[:, k] = take
        left -= _W[k] * take
    for k in _FILL_ORDER:  # 11 descriptors
        take = ~present[:, k] & (_W[k] <= left)
        present[:, k] |= take
        left -= _W[k] * take
    # An odd remainder goes to a 1-point item chosen at random (else one item would carry every odd total).
    first = _ONE_POINT[np.searchsorted(np.cumsum(_ONE_POINT_P), rng.random(n))]
    rows = np.arange(n)
    take = ~present[rows, first] & (left >= 1)
    present[rows, first] |= take
    left -= take
    for k in _ONE_POINT:  # three descriptors
        take = ~present[:, k] & (left >= 1)
        present[:, k] |= take
        left -= take
    # Rarely (about 1 in 100,000) the draws leave a remainder no free item fits: redo those subjects greedily
    # (non-CNS items by descending weight), which always reaches any total up to 37 exactly.
    redo = np.flatnonzero(left > 0)
    present[redo] = False
    left[redo] = clinical_part[redo]
    for k in _GREEDY_ORDER:  # 14 descriptors
        take = left[redo] >= _W[k]
        present[redo, k] = take
        left[redo] -= _W[k] * take
    return present, left


def _by_phase(table: np.ndarray, responded: np.ndarray, phase: np.ndarray) -> np.ndarray:
    return table[responded.astype(np.int64), phase]
