"""What every objective is: named losses from a model's parts, with what it needs declared.

An objective is a registered component of kind ``objective``; a stage lists them under
``model.losses`` (see :mod:`vlreg.objectives`)::

    from vlreg import register
    from vlreg.objectives import Objective, Step

    @register("objective", "my_loss")
    class MyLoss(Objective):
        '''One line of what it trains.'''

        needs = ("encoder", "bridge")          # the model parts it reads
        batch_keys = ("media", "text_input")   # the batch keys it reads ("media": image, video or features)
        loss_names = ("my_loss",)              # what it returns

        def forward(self, step: Step) -> dict[str, Tensor]:
            prompts = step.prompts()           # Prompts [B, Q, Dllm], computed once per step
            return {"my_loss": prompts.embeds.pow(2).mean()}

Its constructor's arguments are its config keys: ``weight`` (the default, one weight for all
of its losses) or one weight per loss. An objective is an ``nn.Module``, so it may hold
trainable parameters (a projection head, a temperature); they train and are checkpointed
with the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import Tensor, nn

from ..models.step import MEDIA, Step

if TYPE_CHECKING:
    from ..models.assembly import VisionLanguageModel

__all__ = ["MEDIA", "Objective", "Step"]


class Objective(nn.Module):
    """Base of every objective.

    Class attributes a subclass sets:

    - ``needs``: the model parts it reads (of ``encoder``, ``bridge``, ``prompter``, ``llm``); a model
      without one of them is a :class:`~vlreg.errors.ConfigError` before anything is built;
    - ``batch_keys``: the batch keys it reads (``media`` for the model's media); a batch without one
      is an :class:`~vlreg.errors.InputError`;
    - ``loss_names``: the names of the losses it returns, unique within a model;
    - ``offers_prompts``: whether its own pass offers the bridge's prompts (:meth:`Step.offer_prompts`);
      such objectives run before the others, which then reuse them.

    Args:
        weight: the weight of each of its losses in the model's ``loss``; 0: not computed.

    A subclass with several losses takes a weight per loss instead and sets ``loss_weights``
    (``{"itc": itc, "itm": itm, "itg": itg}``).
    """

    needs: ClassVar[tuple[str, ...]] = ()
    batch_keys: ClassVar[tuple[str, ...]] = ()
    loss_names: ClassVar[tuple[str, ...]] = ()
    offers_prompts: ClassVar[bool] = False

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.loss_weights: dict[str, float] = {name: weight for name in self.loss_names}

    def weights(self) -> dict[str, float]:
        """The weight of each of its losses (``loss_names``), by name."""
        return dict(self.loss_weights)

    def active(self) -> dict[str, float]:
        """The losses it computes: those of weight other than 0, by name."""
        return {name: weight for name, weight in self.weights().items() if weight}

    def check(self, model: "VisionLanguageModel") -> None:
        """Raise :class:`ConfigError` where the model's parts are present (``needs``) but do not fit."""

    def forward(self, step: Step) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """The losses of :meth:`active` for one step, each a scalar, by name."""
        raise NotImplementedError

