"""Every graph pass is a unit that does something: the registry, the driver's
checks, and, for every pass, a visible effect on the GRU.

For each pass the GRU is compiled twice with everything else equal: with all
passes and with that pass (and whatever requires it) off, and once more with
the pass alone (with its requirements) against its requirements alone. A
probe per pass reads what the pass should change (MatMul count, NegSigmoid,
views, factor jobs, ...) from the rewritten cell, the plan or its bound
workspace; the pass fires when the probe says it did with it and not without.
"""

from __future__ import annotations

import ast
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
from test_imports import import_graph

import minigrad as mg
import minigrad.passes as passes_pkg
from minigrad import pass_names
from minigrad.passes import BY_NAME, LEVELS, PASSES, resolve, without
from minigrad.plan import ALL_STEPS
from models.cells import stack

D, H, T, B = 3, 5, 4, 2


def _textbook_gru() -> mg.Cell:
    """Chung et al.'s GRU as a user writes it, with ``@`` and ``+``:
    ``z = sigmoid(x Wz + h Uz + bz)``, ``r`` likewise, ``c = tanh(x Wc + (r h) Uc + bc)``."""
    b = mg.CellBuilder("gru_textbook")
    x, y = b.input("x", D), b.input("y", H)
    h = b.state("h", H)
    W = {g: b.param(f"W{g}", (D, H), init=mg.init.uniform(0.5)) for g in "zrc"}
    U = {g: b.param(f"U{g}", (H, H), init=mg.init.orthogonal()) for g in "zrc"}
    bias = {g: b.param(f"b{g}", H, init=mg.init.uniform(0.1)) for g in "zrc"}
    z = mg.sigmoid(x @ W["z"] + h @ U["z"] + bias["z"], name="z")
    r = mg.sigmoid(x @ W["r"] + h @ U["r"] + bias["r"], name="r")
    c = mg.tanh(x @ W["c"] + mg.mul(r, h, name="rh") @ U["c"] + bias["c"], name="c")
    h_next = mg.gru_update(z, h, c, name="h_next")
    b.update(h, h_next)
    b.loss(mg.l2_loss(h_next, y, name="l2"))
    return b.build()


def _models_gru() -> mg.Cell:
    """The GRU that ships in ``models`` (``x Wz + bz`` already one Affine)."""
    b = mg.CellBuilder("gru_l2")
    x, y = b.input("x", D), b.input("y", H)
    (h,) = stack(b, x, "gru", D, H, 1)
    b.loss(mg.l2_loss(h, y, name="l2"))
    return b.build()


CELLS = {"textbook": _textbook_gru(), "models": _models_gru()}

#: passes with nothing to do on the shipped CELLS["textbook"], which has no bias addition to fold
#: or to move out of the loop (its input projections are Affine nodes already)
NOTHING_TO_DO = {"models": {"fold_bias", "reassociate_adds"}, "textbook": set()}


def _bound(plan: mg.Plan) -> Any:
    """The workspace of ``plan`` after one forward and backward pass (so that both
    bindings exist)."""
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((T, B, D)), "y": rng.standard_normal((T, B, H))}
    plan.loss_and_grads(plan.source.init_params(0), inputs)
    return plan._workspaces[(B, False)]


def _count(plan: mg.Plan, *types: type) -> int:
    return sum(type(s.op) in types for s in plan.cell.ops.values())


#: pass -> (what it does, a number that is > 0 where the pass fired, 0 elsewhere)
PROBES: dict[str, tuple[str, Callable[[mg.Plan], int]]] = {
    "merge_matmuls": (
        "fewer GEMMs: the x projections and the h projections each become one",
        lambda p: 100 - _count(p, mg.MatMul, mg.Affine),
    ),
    "reassociate_adds": (
        "step-independent terms summed apart (nodes named '<add>.fixed<k>')",
        lambda p: sum(".fixed" in n for n in p.cell.ops),
    ),
    "fold_bias": (
        "bias additions folded into Affine nodes",
        lambda p: _count(p, mg.Affine),
    ),
    "fuse_siblings": (
        "the z and r gates fused into one node over the joined block",
        lambda p: sum(n.startswith("fused(") for n in p.cell.ops),
    ),
    "negate_sigmoid_inputs": (
        "a NegSigmoid over negated weights",
        lambda p: _count(p, mg.NegSigmoid),
    ),
    "time_batch": (
        "forward instructions over all steps at once",
        lambda p: sum(i.kind == "op" and i.step == ALL_STEPS for i in p.forward_instrs),
    ),
    "defer_shared_grads": (
        "weight gradients as 'grad' instructions after the loop",
        lambda p: sum(i.kind == "grad" for i in p.backward_instrs),
    ),
    "view_slices": ("Slice nodes bound as views", lambda p: len(p.views)),
    "share_add_grads": ("Adds sharing their gradient buffer", lambda p: len(p.shared_grads)),
    "reuse_buffers": ("values written over their input", lambda p: len(_bound(p).inplace)),
    "flat_calls": (
        "forward calls bound as numpy ufuncs, not node methods",
        lambda p: sum(isinstance(fn, np.ufunc) for fn, _args in _bound(p).fwd),
    ),
    "factor_elementwise": (
        "Jacobian factor jobs before the backward loop",
        lambda p: len(_bound(p).factor_jobs),
    ),
    "chain_factors": (
        "nodes whose Jacobian is chained into their readers'",
        lambda p: len(_bound(p)._chained),
    ),
    "assign_first_writes": (
        "gradient buffers that need no zeroing",
        lambda p: 100 - len(_bound(p)._zero_roots),
    ),
}


def test_every_pass_has_a_probe() -> None:
    assert set(PROBES) == set(mg.ALL_PASSES)


@pytest.mark.parametrize("gru", sorted(CELLS))
@pytest.mark.parametrize("name", mg.ALL_PASSES)
def test_pass_fires_on_the_gru(name: str, gru: str) -> None:
    """All passes against all but this one (and what requires it)."""
    what, probe = PROBES[name]
    on = probe(mg.compile_plan(CELLS[gru], T))
    off = probe(mg.compile_plan(CELLS[gru], T, passes=without(name)))
    if name in NOTHING_TO_DO[gru]:
        assert on == off, f"{name} on the {gru} GRU: {on} with it, {off} without"
    else:
        assert on > off, f"{name} ({what}), {gru} GRU: {on} with it, {off} without"


#: passes that act on what another pass (not a requirement) made, on this GRU:
#: slices of one product appear only once the GEMMs are merged, and ``x Wz`` meets
#: ``bz`` in one Add only once the sum is regrouped
NEEDS_COMPANY = {
    "fuse_siblings": ("merge_matmuls",),
    "view_slices": ("merge_matmuls",),
    "fold_bias": ("reassociate_adds",),
}


@pytest.mark.parametrize("name", mg.ALL_PASSES)
def test_pass_fires_alone_with_its_requirements(name: str) -> None:
    """The pass with its requirements only, against its requirements only."""
    what, probe = PROBES[name]
    base = (*BY_NAME[name].requires, *NEEDS_COMPANY.get(name, ()))
    gru = CELLS["textbook"]
    on = probe(mg.compile_plan(gru, T, passes=(*base, name)))
    off = probe(mg.compile_plan(gru, T, passes=base))
    assert on > off, f"{name} ({what}): {on} with it alone, {off} without"


def test_a_missing_requirement_is_an_error_naming_it() -> None:
    with pytest.raises(mg.ArgumentError, match="'chain_factors' requires 'factor_elementwise'"):
        mg.compile_plan(CELLS["textbook"], 3, passes=("chain_factors",))
    with pytest.raises(mg.ArgumentError, match="'chain_factors' requires 'factor_elementwise'"):
        mg.compile(CELLS["textbook"], passes=["flat_calls", "chain_factors"])
    # with it, fine
    assert mg.compile_plan(CELLS["textbook"], 3, passes=("chain_factors", "factor_elementwise")).passes == (
        "factor_elementwise",
        "chain_factors",
    )


def test_unknown_pass_names_it_and_lists_the_known_ones() -> None:
    with pytest.raises(mg.ArgumentError, match=r"unknown pass\(es\) \['fast'\]; known: \[") as e:
        mg.compile(CELLS["textbook"], passes=("fast", "view_slices"))
    assert all(n in str(e.value) for n in mg.ALL_PASSES)


def test_the_driver_orders_the_passes() -> None:
    assert resolve(["flat_calls", "negate_sigmoid_inputs", "merge_matmuls"]) == (
        "merge_matmuls",
        "negate_sigmoid_inputs",
        "flat_calls",
    )
    assert resolve(None) == mg.DEFAULT_PASSES == mg.ALL_PASSES
    assert resolve(()) == ()


def test_without_takes_the_dependent_passes_along() -> None:
    off = without("factor_elementwise")
    assert "factor_elementwise" not in off and "chain_factors" not in off
    assert len(off) == len(mg.ALL_PASSES) - 2
    assert without("chain_factors") == tuple(p for p in mg.ALL_PASSES if p != "chain_factors")


def test_each_pass_is_one_module_with_one_unit() -> None:
    helpers = {"base", "driver", "phases"}
    modules = {m.name for m in pkgutil.iter_modules(passes_pkg.__path__)} - helpers
    assert modules == set(mg.ALL_PASSES)
    assert tuple(p.name for p in PASSES) == mg.ALL_PASSES
    seen: set[str] = set()
    levels = [LEVELS.index(p.level) for p in PASSES]
    assert levels == sorted(levels), "the registry applies cell, program, then layout passes"
    for unit in PASSES:
        module = __import__(f"minigrad.passes.{unit.name}", fromlist=["PASS"])
        assert module.PASS is unit
        assert unit.level in LEVELS and len(unit.description) > 80, unit.name
        assert (unit.rewrite is not None) == (unit.level == "cell"), unit.name
        assert unit.applied_by, unit.name
        # a requirement is a known pass applied before the one that needs it
        assert set(unit.requires) <= seen, unit.name
        seen.add(unit.name)


def test_the_textbook_gru_agrees_with_the_plain_plan_pass_by_pass() -> None:
    """All passes, each off in turn, each alone (with its requirements): the same
    loss and gradients as the plain plan, to rounding."""
    gru = CELLS["textbook"]
    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal((T, B, D)), "y": rng.standard_normal((T, B, H))}
    params = gru.init_params(2)
    loss0, g0 = mg.compile_plan(gru, T, passes=()).loss_and_grads(params, inputs)
    settings = [mg.ALL_PASSES] + [without(n) for n in mg.ALL_PASSES]
    settings += [(*BY_NAME[n].requires, n) for n in mg.ALL_PASSES]
    for passes in settings:
        loss, g = mg.compile_plan(gru, T, passes=passes).loss_and_grads(params, inputs)
        assert loss == pytest.approx(loss0, rel=1e-12), passes
        for k, v in g0.flat().items():
            np.testing.assert_allclose(g.flat()[k], v, rtol=1e-11, atol=1e-13, err_msg=str(passes))


def _runtime_modules() -> list[str]:
    """The runtime's modules (``minigrad.workspace``, ``minigrad.loop``,
    ``minigrad.arena``, and ``minigrad.runtime.*`` where the runtime is a package)."""
    g = import_graph()
    flat = {"minigrad.workspace", "minigrad.loop", "minigrad.arena"}
    return sorted(m for m in g if m in flat or m.split(".")[:2] == ["minigrad", "runtime"])


def test_the_runtime_never_reaches_a_pass_module() -> None:
    g = import_graph()
    runtime = _runtime_modules()
    assert "minigrad.loop" in runtime
    for module in runtime:
        reached = nx.descendants(g, module)
        compiler = sorted(m for m in reached if m.split(".")[:2] == ["minigrad", "passes"])
        assert not compiler and "minigrad.plan" not in reached, (module, compiler)


def test_the_passes_import_neither_the_plan_nor_the_runtime() -> None:
    """Pass units are compiler code: they read cells and instructions, and the plan
    and the runtime call them, never the other way round."""
    g = import_graph()
    units = [m for m in g if m.split(".")[:2] == ["minigrad", "passes"]]
    assert "minigrad.passes.driver" in units and "minigrad.passes.chain_factors" in units
    for unit in units:
        bad = sorted(nx.descendants(g, unit) & {"minigrad.plan", "minigrad.program", *_runtime_modules()})
        assert not bad, (unit, bad)
    # pass_names is a leaf, read by the layout units (and the runtime)
    assert not list(g.successors("minigrad.pass_names"))
    assert "minigrad.pass_names" in nx.descendants(g, "minigrad.passes.chain_factors")


def test_the_runtime_names_passes_by_their_constants() -> None:
    """No pass name is spelt as a string in the runtime: it reads the layout passes'
    names from ``minigrad.pass_names``, which the units use too."""
    root = Path(mg.__file__).parent.parent
    for module in _runtime_modules():
        path = root / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = path.with_suffix("") / "__init__.py"
        tree = ast.parse(path.read_text())
        spelt = {
            n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in BY_NAME
        }
        assert not spelt, (module, spelt)
    layout = {p.name for p in PASSES if p.level == "layout"}
    assert layout == {getattr(pass_names, c) for c in pass_names.__all__}
