"""Training objectives: registered components that compute named losses from a model's parts.

A stage's ``model.losses`` lists objective nodes; each is checked against the objective's
constructor (a misspelt key is an error) and needs its parts (a model without one is a
one-line error before anything is built)::

    losses: [{name: blip2_stage1, itc: 1, itm: 1, itg: 1}, {name: pformer_alignment, weight: 10}]

=================  ====================================  =========================  =========================
objective          losses (config keys: their weights)   parts                      batch keys
=================  ====================================  =========================  =========================
blip2_stage1       itc, itm, itg                         encoder, Q-Former bridge   media, text_input
lm                 lm (``weight``)                       encoder, bridge, llm       media, text_input
pformer_alignment  align (``weight``)                    encoder, bridge, prompter  media, text_input
pformer_stage0     reconstruction, contrastive,          prompter (P-Former), llm   text_input
                   vocabulary
=================  ====================================  =========================  =========================

Each objective's weights default to 1; a loss of weight 0 is not computed. The model's ``loss``
is the weighted sum of every objective's losses. One file per objective; a plugin adds one with
``@register("objective", name)`` on a subclass of :class:`Objective` (see :mod:`.base`).
"""

from .base import Objective, Step

__all__ = ["Objective", "Step"]
