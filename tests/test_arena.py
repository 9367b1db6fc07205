"""The workspace arena hands out aligned, disjoint, C-contiguous buffers."""

from __future__ import annotations

import numpy as np

from minigrad.arena import ALIGN, MIN_BLOCK, Arena


def test_buffers_are_aligned_disjoint_and_typed() -> None:
    arena = Arena(10_000)
    shapes = [
        ((3, 5), np.float64),
        ((7,), np.float32),
        ((), np.float64),
        ((0, 4), np.float32),
        ((2, 3, 4), np.float64),
    ]
    arrays = [arena.empty(s, d) for s, d in shapes]
    for a, (s, d) in zip(arrays, shapes, strict=True):
        assert a.shape == s and a.dtype == d and a.flags.c_contiguous and a.flags.writeable
        assert a.size == 0 or a.ctypes.data % ALIGN == 0
    for i, a in enumerate(arrays):
        a[...] = i
    for i, a in enumerate(arrays):
        assert np.all(a == i)
    assert arena.allocated == sum(a.nbytes for a in arrays)


def test_new_blocks_when_one_is_full_and_zeros_are_zero() -> None:
    arena = Arena(0)
    big = arena.zeros((MIN_BLOCK // 8 + 10,), np.float64)  # larger than a block
    small = [arena.zeros((100,), np.float64) for _ in range(200)]
    assert not big.any() and not any(s.any() for s in small)
    big[:] = 1
    for k, s in enumerate(small):
        s[:] = k
    assert np.all(big == 1)
    assert all(np.all(s == k) for k, s in enumerate(small))


def test_a_plan_workspace_lives_in_its_arena() -> None:
    from models.nets.gru import GRU

    gru = GRU(input_size=3, hidden_size=4, seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 2, 3)), rng.standard_normal((6, 2, 4))
    loss, grads = gru.loss_and_grads(x, y)
    again = gru.loss_and_grads(x, y)
    assert loss == again[0]
    assert all(np.array_equal(grads[k], again[1][k]) for k in grads)
    ws = next(iter(gru._plan(6)._workspaces.values()))

    def block(a: np.ndarray) -> np.ndarray:
        while isinstance(a.base, np.ndarray):
            a = a.base
        return a

    buffers = [*ws.bufs.values(), *ws.gbufs.values()]
    assert buffers and all(block(a).dtype == np.uint8 and block(a).ndim == 1 for a in buffers)


def test_blocks_are_clipped_but_large_requests_fit() -> None:
    from minigrad.arena import MAX_BLOCK

    arena = Arena(10 * MAX_BLOCK)
    a = arena.empty((16,), np.float64)
    assert a.base is not None and a.base.size <= MAX_BLOCK + 64
    huge = arena.empty((MAX_BLOCK // 8 + 1,), np.float64)
    assert huge.nbytes > MAX_BLOCK
