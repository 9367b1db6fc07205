"""One family of errors: every public entry point, given a bad argument, raises a
``MinigradError`` of the class that argument gets everywhere, naming the argument."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg
from minigrad import init
from minigrad.explain import explain_all
from minigrad.plan import compile_plan

ROOT = Path(__file__).resolve().parents[1]


def _cell() -> mg.Cell:
    b = mg.CellBuilder("rnn")
    x, y, h = b.input("x", 3), b.input("y", 2), b.state("h", 2)
    W = b.param("W", (3, 2), init=init.uniform(0.5))
    U = b.param("U", (2, 2), init=init.uniform(0.5))
    h_next = mg.tanh(x @ W + h @ U, name="h_next")
    b.update(h, h_next)
    b.output("h", h_next)
    b.loss(mg.l2_loss(h_next, y, name="loss"))
    return b.build()


CELL = _cell()
PARAMS = CELL.init_params(0)
RNG = np.random.default_rng(0)
INPUTS = {"x": RNG.standard_normal((3, 2, 3)), "y": RNG.standard_normal((3, 2, 2))}


def _forward(**changes: object) -> Callable[[], object]:
    args: dict[str, object] = {"params": PARAMS, "inputs": INPUTS, "states": None, "mask": None}
    args.update(changes)
    return lambda: mg.plan_of(CELL, 3).forward(**args)  # type: ignore[arg-type]


def _backward(grad_outputs: dict[str, np.ndarray]) -> Callable[[], object]:
    def call() -> object:
        plan = mg.plan_of(CELL, 3)
        return plan.backward(plan.forward(PARAMS, INPUTS), grad_outputs=grad_outputs)

    return call


#: (what, call, expected class, a pattern the message must contain)
BAD_CALLS: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    # steps and truncate: ArgumentError wherever they are passed
    ("unroll steps", lambda: mg.unroll(CELL, 0), mg.ArgumentError, r"steps must be an int >= 1, got 0"),
    ("unroll steps float", lambda: mg.unroll(CELL, 2.0), mg.ArgumentError, r"steps .* got 2\.0"),  # type: ignore[arg-type]
    ("unroll truncate", lambda: mg.unroll(CELL, 3, truncate=0), mg.ArgumentError, "truncate"),
    ("explain steps", lambda: mg.explain(CELL, "W", steps=0), mg.ArgumentError, "steps"),
    ("explain steps bool", lambda: mg.explain(CELL, "W", steps=True), mg.ArgumentError, "steps"),
    ("explain max_paths", lambda: mg.explain(CELL, "W", max_paths=-1), mg.ArgumentError, "max_paths"),
    ("explain_all steps", lambda: explain_all(CELL, 0), mg.ArgumentError, "steps"),
    ("explain_all max_paths", lambda: explain_all(CELL, 2, max_paths=-1), mg.ArgumentError, "max_paths"),
    ("unrolled_to_dot steps", lambda: mg.unrolled_to_dot(CELL, 0), mg.ArgumentError, "steps"),
    ("unrolled_to_dot truncate", lambda: mg.unrolled_to_dot(CELL, 2, truncate=-1), mg.ArgumentError,
     "truncate"),
    ("plan steps", lambda: mg.plan_of(CELL, 0), mg.ArgumentError, "steps"),
    ("plan truncate", lambda: mg.plan_of(CELL, 3, truncate=0), mg.ArgumentError, "truncate"),
    ("compile_plan steps", lambda: compile_plan(CELL, -1), mg.ArgumentError, "steps"),
    # names: GraphError
    ("plan wrt unknown", lambda: mg.plan_of(CELL, 3, wrt=["V"]), mg.GraphError, r"\['V'\]"),
    ("explain param", lambda: mg.explain(CELL, "V"), mg.GraphError, "'V' is not a parameter"),
    ("forward missing parameter", _forward(params={"W": PARAMS["W"]}), mg.GraphError, "parameter 'U'"),
    ("forward unknown parameter", _forward(params={**PARAMS, "V": PARAMS["U"]}), mg.GraphError,
     r"parameter\(s\) \['V'\]"),
    ("forward missing input", _forward(inputs={"x": INPUTS["x"]}), mg.GraphError, "input 'y'"),
    ("forward no input at all", _forward(inputs={}), mg.GraphError, r"input\(s\) \['x', 'y'\]"),
    ("forward unknown state", _forward(states={"c": np.zeros((2, 2))}), mg.GraphError,
     r"state\(s\) \['c'\]"),
    ("backward unknown output", _backward({"z": np.zeros((3, 2, 2))}), mg.GraphError,
     "grad_outputs .*'z'"),
    ("gradcheck missing input", lambda: mg.gradcheck(CELL, PARAMS, {}), mg.GraphError, "input"),
    # arrays: ShapeError, DTypeError
    ("forward input shape", _forward(inputs={**INPUTS, "x": INPUTS["x"][:, :, :2]}), mg.ShapeError,
     "input 'x'"),
    ("forward input dtype", _forward(inputs={**INPUTS, "x": INPUTS["x"].astype(np.float32)}),
     mg.DTypeError, "input 'x'"),
    ("forward parameter shape", _forward(params={**PARAMS, "W": np.zeros((2, 2))}), mg.ShapeError,
     "parameter 'W'"),
    ("forward mask shape", _forward(mask=np.ones((2, 2))), mg.ShapeError, "mask"),
    ("backward output shape", _backward({"h": np.zeros((3, 2, 3))}), mg.ShapeError, "output 'h'"),
    ("orthogonal shape", lambda: init.orthogonal()(np.random.default_rng(0), (2, 2, 2), np.dtype(np.float64)),
     mg.ShapeError, "2-D shape"),
    # other plain arguments: ArgumentError, ArgumentTypeError
    ("forward mask values", _forward(mask=np.full((3, 2), 2.0)), mg.ArgumentError, "mask"),
    ("plan unknown pass", lambda: mg.plan_of(CELL, 3, passes=("fast",)), mg.ArgumentError, r"passes.*'fast'"),
    ("plan passes string", lambda: mg.plan_of(CELL, 3, passes="time_batch"), mg.ArgumentTypeError,
     r"passes must be a list of names.*\['time_batch'\]"),
    ("plan wrt string", lambda: mg.plan_of(CELL, 3, wrt="W"), mg.ArgumentTypeError, "wrt must be a list"),
    ("plan wrt not names", lambda: mg.plan_of(CELL, 3, wrt=[1]), mg.ArgumentTypeError, "wrt must hold names"),
    ("gradcheck target", lambda: mg.gradcheck("W"), mg.ArgumentTypeError, "target must be a Node or a Cell"),
    ("explain param not a name", lambda: mg.explain(CELL, ["W"]), mg.ArgumentTypeError,  # type: ignore[arg-type]
     r"param must be a parameter name"),
    ("check_grads h", lambda: mg.check_grads(lambda a: 0.0, {"w": np.zeros(2)}, {}, h=0.0),
     mg.ArgumentError, r"h must be a number > 0, got 0\.0"),
    ("check_grads rtol", lambda: mg.check_grads(lambda a: 0.0, {"w": np.zeros(2)}, {}, rtol=-1.0),
     mg.ArgumentError, "rtol"),
    ("check_grads directions", lambda: mg.check_grads(lambda a: 0.0, {"w": np.zeros(2)}, {}, directions=-1),
     mg.ArgumentError, "directions"),
    ("gradcheck per_element_max", lambda: mg.gradcheck(CELL, PARAMS, INPUTS, per_element_max=-1),
     mg.ArgumentError, "per_element_max"),
    ("write_graph extension", lambda: mg.write_graph("digraph {}", "graph.jpg"), mg.ArgumentError,
     r"path 'graph\.jpg'.*extension"),
]


@pytest.mark.parametrize(("what", "call", "cls", "pattern"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_argument_gets_its_class_and_is_named(
    what: str, call: Callable[[], object], cls: type[Exception], pattern: str
) -> None:
    with pytest.raises(cls, match=pattern) as info:
        call()
    assert type(info.value) is cls, f"{what}: {type(info.value).__name__}"
    assert isinstance(info.value, mg.MinigradError)
    assert "\n" not in str(info.value)


def test_a_bad_steps_is_the_same_error_everywhere() -> None:
    calls: list[Callable[[], object]] = [
        lambda: mg.unroll(CELL, 0),
        lambda: mg.explain(CELL, "W", steps=0),
        lambda: explain_all(CELL, 0),
        lambda: mg.unrolled_to_dot(CELL, 0),
        lambda: mg.plan_of(CELL, 0),
        lambda: compile_plan(CELL, 0),
    ]
    messages = set()
    for call in calls:
        with pytest.raises(mg.MinigradError) as info:
            call()
        assert type(info.value) is mg.ArgumentError
        messages.add(str(info.value))
    assert messages == {"cell 'rnn': steps must be an int >= 1, got 0"}


def test_the_built_in_classes_still_catch_them() -> None:
    assert issubclass(mg.ArgumentError, ValueError)
    assert issubclass(mg.ArgumentTypeError, mg.ArgumentError)
    assert issubclass(mg.ArgumentTypeError, TypeError)
    assert issubclass(mg.GraphError, ValueError) and issubclass(mg.ShapeError, ValueError)
    assert issubclass(mg.DTypeError, TypeError)
    with pytest.raises(ValueError):
        mg.unroll(CELL, 0)
    with pytest.raises(TypeError):
        mg.gradcheck("W")


def _raised_names(path: Path) -> list[tuple[int, str]]:
    """``(line, class name)`` of every ``raise Name(...)`` in a module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            func = node.exc.func
            if isinstance(func, ast.Name):
                out.append((node.lineno, func.id))
    return out


def test_every_raise_in_minigrad_raises_a_minigrad_error() -> None:
    """A static audit: each ``raise SomeError(...)`` in minigrad/ names a subclass of
    ``MinigradError`` (re-raises and helpers that build the error are not counted)."""
    import importlib

    offenders = []
    files = sorted((ROOT / "minigrad").rglob("*.py"))
    assert files
    for path in files:
        rel = path.relative_to(ROOT).with_suffix("")
        module = importlib.import_module(".".join(rel.parts).removesuffix(".__init__"))
        for line, name in _raised_names(path):
            cls = getattr(module, name, None) or getattr(mg, name, None)
            if not (isinstance(cls, type) and issubclass(cls, mg.MinigradError)):
                offenders.append(f"{rel}.py:{line}: {name}")
    assert offenders == []


def test_errors_page_lists_every_error_class() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    names = [n for n in dir(mg) if isinstance(getattr(mg, n), type) and issubclass(getattr(mg, n), mg.MinigradError)]
    assert len(names) >= 9
    missing = [n for n in names if not re.search(rf"\*\*`{n}`\*\*", text)]
    assert missing == []


@pytest.mark.parametrize(
    "name", ["a/b", "W\n", "line\nbreak", "tab\there", "", "x" * 201, "bell\x07"]
)
def test_unusable_names_are_refused_saying_what_is_allowed(name: str) -> None:
    b = mg.CellBuilder("c")
    with pytest.raises(mg.errors.GraphError, match="printable characters other than '/'") as exc:
        b.param(name, (2, 2))
    assert "\n" not in str(exc.value)
    with pytest.raises(mg.errors.GraphError, match="printable"):
        b.state(name, 2)
    with pytest.raises(mg.errors.GraphError, match="printable"):
        mg.CellBuilder(name)
    with pytest.raises(mg.errors.GraphError, match="printable"):
        b.output(name, b.param("ok", 2))


def test_names_the_dot_writer_escapes_are_still_accepted() -> None:
    b = mg.CellBuilder('odd "cell"')
    for name in ['W"quoted"', "back\\slash", "h_next@2", "loss {with} [brackets]; -> arrow", "l1.h"]:
        b.param(name, 2)


@pytest.mark.parametrize("shape", [(10**12, 10**12), (10**8 + 1,), (20_000, 20_000)])
def test_shapes_beyond_the_element_limit_are_refused_before_allocating(
    shape: tuple[int, ...],
) -> None:
    from minigrad.cell import MAX_ELEMENTS

    b = mg.CellBuilder("c")
    with pytest.raises(mg.errors.ShapeError, match=f"parameter 'W'.*{MAX_ELEMENTS:,}"):
        b.param("W", shape)
    with pytest.raises(mg.errors.ShapeError, match=r"input 'x'.*elements"):
        b.input("x", shape)
    b.param("ok", (10_000, 10_000))  # exactly the limit: declared, nothing allocated yet


def test_the_element_limit_admits_every_model_the_command_builds() -> None:
    from minigrad.cell import MAX_ELEMENTS
    from models.nets.limits import MAX_PARAMS

    assert MAX_PARAMS <= MAX_ELEMENTS
