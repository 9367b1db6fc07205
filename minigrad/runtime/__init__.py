"""The runtime: a compiled plan bound to buffers and to flat lists of numpy calls, and run.

One module per part, each importing only from those above it:

* ``instr``: the instructions a plan hands over (``Instr`` over ``BufRef``),
  and the names of buffers;
* ``layout``: which buffers a plan needs, their shapes, the arena they are
  carved from, and the views among them;
* ``bind_forward``: the forward pass as a flat list of calls;
* ``bind_backward``: gradient buffers, precomputed Jacobians, write modes
  (assign or add), seeds, and the backward pass as a flat list of calls;
* ``execute``: loading inputs, running the lists, ``Run`` and ``Gradients``;
* ``workspace``: ``Workspace``, the parts composed for one batch size.

The runtime never imports the compiler (``minigrad.plan``, ``minigrad.passes``):
it reads a ``Plan``'s attributes only.
"""
