"""Language-model pretraining of a small LLM on a sentence corpus, and its export as a transformers model.

A frozen LLM with random weights cannot be steered by soft prompts (a random OPT's
logits are nearly uniform, a random T5's huge), while the P-Former and BLIP-2 recipes
assume an LLM that knows its language. This task gives the synthetic world such an
LLM: it trains the world's tiny OPT or T5 (an ``llm`` node with ``frozen: false``) on
the world's sentences, and :meth:`LMPretraining.export` writes it as a transformers
directory that later stages load with ``{name: causal_lm, path: <dir>}`` (or
``seq2seq_lm``). :func:`pretrain_lm` does the same in a few lines for tests and fixtures.

The objective is the adapter's own loss with no soft prompts (``[B, 0, D]``):

- decoder-only: next-token prediction over ``bos + sentence + eos``, scored on the
  sentence and eos;
- encoder-decoder: prefix language modelling: the encoder reads a word prefix of random
  length (possibly empty) and eos, the decoder predicts the rest and eos. This is the
  split the adapter uses for P-Former reconstruction and stage-2 generation, so the LM
  learns exactly the format it is later conditioned in; T5's span corruption would teach
  sentinel tokens that no later stage uses.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import barrier, is_main
from ..data.media import BadSample
from ..errors import ConfigError
from ..io.run_dir import RunDir
from ..models.base import LanguageModel, Prompts
from ..models.llms.common import IGNORE
from ..registry import register
from .base import Task, item_text

@register("task", "lm_pretrain")
class LMPretraining(Task):
    """Pretrain a small LLM on sentences (no prompts); evaluate held-out loss and perplexity; export it.

    The stage's ``model:`` node holds one key, ``llm``: a ``causal_lm`` or ``seq2seq_lm``
    node, trainable (``frozen`` defaults to false here; true is an error). The model is
    the LLM adapter itself. Training data: a sentence corpus (items ``{"text_input"}``).
    Evaluation reports ``loss`` (mean cross-entropy per target token over the held-out
    sentences) and ``perplexity`` (its exponential). :meth:`export` saves the trained
    transformers model and tokenizer.

    An item's text is its ``text_input``, followed by its ``text_output`` when it has one,
    so question-answer datasets (formatted by their ``question`` processor's template)
    teach the LM the answer format too.
    """

    def collate(self, items: list[Any]) -> dict[str, Any]:
        """Batches of texts alone, whatever else the items hold (media paths, answer lists)."""
        batch = super().collate([{"text_input": item_text(item)} for item in items if not isinstance(item, BadSample)])
        return batch

    def build_model(self, node: Optional[Mapping[str, Any]]) -> nn.Module:
        """The trainable LLM adapter of ``model.llm``."""
        self.validate_model(node, "model")
        return build_trainable_lm(node["llm"], "model.llm")

    @classmethod
    def validate_model(cls, node: Optional[Mapping[str, Any]], where: str) -> None:
        """``node`` must be ``{llm: <llm node>}`` with the LLM not frozen."""
        from ..build import validate

        node = dict(node or {})
        if set(node) != {"llm"}:
            extra = sorted(set(node) - {"llm"})
            what = f"has other keys ({', '.join(extra)})" if extra else "has no llm"
            raise ConfigError(f"{where}: lm_pretrain trains an LLM alone: the model node {what}; give only model.llm")
        llm = node["llm"]
        if isinstance(llm, Mapping) and llm.get("frozen") is True:
            raise ConfigError(f"{where}.llm: lm_pretrain trains the LLM: set frozen: false (or leave it out)")
        validate("llm", llm, f"{where}.llm")

    def train_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {"loss": lm_loss(model, batch["text_input"])}

    def evaluate(self, model: nn.Module, dataset: Any, context: Any) -> dict[str, float]:
        total, count = 0.0, 0
        for texts in text_batches(dataset, context):
            with context.autocast():
                nll, tokens = summed_nll(model, no_prompts(model, len(texts)), texts)
            total, count = total + nll, count + tokens
        total, count = (sum(part) for part in zip(*context.gather([(total, count)])))
        loss = total / max(count, 1)
        return {"loss": loss, "perplexity": float(torch.tensor(loss).exp()), "tokens": count}

    def metric_names(self) -> list[str]:
        return ["loss", "perplexity", "tokens"]

    def export(self, model: nn.Module, output_dir: str | Path) -> Path:
        """Save the trained model and its tokenizer to ``<output_dir>/export`` (rank 0); returns that directory.

        The directory loads with ``{name: causal_lm, path: <dir>}`` (``seq2seq_lm`` for T5).
        """
        target = RunDir(output_dir).export
        if is_main():
            save_lm(model, target)
        barrier()
        return target


def text_batches(dataset: Any, context: Any) -> Iterator[list[str]]:
    """The sentences (``text_input``) of this rank's slice of a sentence dataset, batch by batch."""
    for batch in context.loader(dataset):
        if batch.get("text_input"):
            yield list(batch["text_input"])


def build_trainable_lm(node: Any, where: str = "llm") -> LanguageModel:
    """An LLM adapter from an ``llm`` node, trainable unless the node says otherwise."""
    from ..build import build

    return build("llm", node, where, defaults={"frozen": False})


def no_prompts(llm: LanguageModel, batch_size: int) -> Prompts:
    """An empty soft prompt ``[B, 0, width]``: the adapters then see text alone."""
    return Prompts(torch.zeros(batch_size, 0, llm.width, device=llm.device))


def lm_loss(llm: LanguageModel, texts: Sequence[str]) -> Tensor:
    """The language-modelling loss of ``texts`` without prompts (see the module docstring): a scalar."""
    return llm.loss(no_prompts(llm, len(texts)), texts)


def summed_nll(llm: LanguageModel, prompts: Prompts, texts: Sequence[str]) -> tuple[float, int]:
    """Summed cross-entropy of the target tokens of ``texts`` after ``prompts`` ``[B, Q, D]``, and their count."""
    scored = llm(prompts, texts)
    targets = scored.targets.flatten()
    total = F.cross_entropy(scored.logits.flatten(0, 1), targets, ignore_index=IGNORE, reduction="sum")
    return float(total), int((targets != IGNORE).sum())


def save_lm(llm: LanguageModel, directory: str | Path) -> Path:
    """``save_pretrained`` of the adapter's transformers model and tokenizer into ``directory``."""
    directory = Path(directory)
    llm.model.save_pretrained(directory)
    llm.tokenizer.save_pretrained(directory)
    return directory


def pretrain_lm(node: Any, sentences: Sequence[str], steps: int = 300, lr: float = 3e-3, batch_size: int = 32,
                seed: int = 0) -> LanguageModel:
    """Train the LLM of ``node`` (an ``llm`` node) on ``sentences`` with :func:`lm_loss`; returns it in eval mode.

    AdamW at a constant ``lr``, ``steps`` batches of ``batch_size`` sentences drawn at random.
    The global random state is left as it was; ``seed`` fixes the initial weights, the
    batches and the prefix-LM splits. A tiny LM learns a small corpus in seconds.
    """
    sentences = list(sentences)
    if not sentences:
        raise ConfigError("pretrain_lm: no sentences to train on")
    draw = random.Random(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        llm = build_trainable_lm(node)
        optimizer = torch.optim.AdamW([p for p in llm.parameters() if p.requires_grad], lr=lr)
        llm.train()
        for _ in range(steps):
            loss = lm_loss(llm, draw.sample(sentences, min(batch_size, len(sentences))))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return llm.eval()
