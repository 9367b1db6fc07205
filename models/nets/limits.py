"""How large a model may be: checked before any parameter is allocated.

A parameter costs about 200 bytes of memory in a training run: the value, its
gradient, the optimiser's state, the best parameters kept for early stopping,
weight noise and the checkpoint being written, and in the compiled program its
own copy, its gradient and the merged, negated and factored weights the graph
passes derive from it (``minigrad.program.Program``). Measured on 2026-12-01:
an LSTM with 560 units (1.5 million parameters) trains in about 400 MB, one with
650 units (2.0 million) in 502 MB, and a GRU with 1,100 units (4.0 million) in
711 MB. :data:`MAX_PARAMS` keeps every accepted model's run under 500 MB,
and a typo such as ``hidden_size=10**9`` an error instead of an out-of-memory
kill.
"""

from __future__ import annotations

__all__ = [
    "MAX_BATCH_UNITS",
    "MAX_HIDDEN",
    "MAX_LAYERS",
    "MAX_PARAMS",
    "check_batch_units",
    "check_model_size",
    "lstm_param_count",
]

MAX_HIDDEN = 8192
"""The largest state size of a layer."""
MAX_LAYERS = 64
"""The most stacked layers."""
MAX_PARAMS = 1_500_000
"""The most parameters a model may have, counted for the LSTM, the largest built-in cell
(one layer of 559 units on 88 keys; 70 times the paper's models)."""


MAX_BATCH_UNITS = 36_864
"""The most ``batch_size * (hidden * layers + inputs)`` of a training run: the width of
one step's activations (states and gates grow with the hidden units, inputs, targets
and read-out with the inputs), which the memory of a step grows with. 275 sequences
for a GRU-46 on 88 keys, 56 for an LSTM of 559 units, which then trains in about 370
MB (64 took 490 MB and 128 took 688 MB)."""


def check_batch_units(batch_size: int, hidden: int, layers: int, inputs: int) -> None:
    """Refuse a training batch wider than :data:`MAX_BATCH_UNITS` units in all.

    Raises:
        ValueError: one line naming the product, the limit and the largest batch size.
    """
    width = hidden * layers + inputs
    units = batch_size * width
    if units > MAX_BATCH_UNITS:
        most = max(1, MAX_BATCH_UNITS // width)
        raise ValueError(
            f"batch size {batch_size} x ({hidden} hidden x {layers} layer(s) + {inputs} "
            f"inputs) = {units:,} units in one step, more than the {MAX_BATCH_UNITS:,} a "
            f"training batch may have: use a batch size of at most {most}"
        )


def lstm_param_count(input_size: int, hidden: int, layers: int, readout: int) -> int:
    """The parameters of a stacked LSTM with a read-out of ``readout`` units (0: none):
    per layer four gates of input weights, recurrent weights and biases, and three
    peephole vectors."""
    total = 0
    width = input_size
    for _ in range(layers):
        total += 4 * (hidden * (width + hidden) + hidden) + 3 * hidden
        width = hidden
    return total + (hidden * readout + readout if readout else 0)


def check_model_size(input_size: int, hidden: int, layers: int, readout: int = 0) -> None:
    """Refuse a model above :data:`MAX_HIDDEN`, :data:`MAX_LAYERS` or :data:`MAX_PARAMS`.

    Raises:
        ValueError: one line naming the size at fault and the limit.
    """
    if hidden > MAX_HIDDEN:
        raise ValueError(f"hidden size must be <= {MAX_HIDDEN}, got {hidden}")
    if layers > MAX_LAYERS:
        raise ValueError(f"layers must be <= {MAX_LAYERS}, got {layers}")
    n = lstm_param_count(input_size, hidden, layers, readout)
    if n > MAX_PARAMS:
        raise ValueError(
            f"hidden size {hidden}, {layers} layer(s) and {input_size} inputs: {n:,} "
            f"parameters for an LSTM (the largest built-in cell), more than the "
            f"{MAX_PARAMS:,} a model may have"
        )
