"""Fast paths give the results of the plain computations they replace.

- ``CausalLM.loss`` runs the output head on the scored positions only: the same loss and
  gradients as ``forward(...).cross_entropy()`` over full logits.
- The runner's AdamW is torch's fused kernel: the same updates as the reference loop.
- Decoder-only generation with beams (or several returned sequences) runs the shared prefix
  once per sample: the same tokens as ``generate()`` on the repeated rows.
"""

from __future__ import annotations

import pytest
import torch

import vlreg  # noqa: F401  (installs the torchvision guard before transformers loads)
from vlreg.build import build
from vlreg.models.base import Prompts
from vlreg.models.llms.common import IGNORE

TEXTS = ["a red circle on the left", "a small blue square", "two green stars at the top of the picture"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def opt(tiny_nodes, **overrides):
    torch.manual_seed(0)
    return build("llm", {**tiny_nodes["opt"], **overrides})


def prompts(batch: int, width: int, mask: torch.Tensor | None = None) -> Prompts:
    embeds = torch.randn(batch, 4, width, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    return Prompts(embeds, mask)


def head_rows(llm) -> list[int]:
    """Records how many rows the LLM's output head sees per call."""
    rows: list[int] = []
    head = llm.model.get_output_embeddings()
    head.register_forward_hook(lambda module, inputs, output: rows.append(inputs[0].flatten(0, -2).shape[0]))
    return rows


@pytest.mark.parametrize("case", ["caption", "prompt and masked prompts", "answers"])
def test_causal_loss_on_scored_positions_equals_the_full_logits(tiny_nodes, case):
    llm = opt(tiny_nodes, prompt="a photo of" if case != "caption" else "")
    mask = torch.tensor([[True] * 4, [False, True, True, True], [False, False, True, True]])
    outputs = [None, "blue", "three"] if case == "answers" else None
    first = prompts(3, llm.width, mask if case != "caption" else None)
    second = Prompts(first.embeds.detach().clone().requires_grad_(True), first.mask)
    rows = head_rows(llm)

    full = llm(first, TEXTS, outputs)
    reference = full.cross_entropy()
    reference.backward()
    fast = llm.loss(second, TEXTS, outputs)
    fast.backward()

    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(second.embeds.grad, first.embeds.grad, rtol=0, atol=1e-7)
    scored = int((full.targets != IGNORE).sum())
    assert rows == [full.logits.shape[0] * full.logits.shape[1], scored]  # the head saw only the scored rows
    assert scored < rows[0] / 2


def test_causal_loss_gives_a_trainable_llm_the_same_weight_gradients(tiny_nodes):
    plain, fast = opt(tiny_nodes, frozen=False), opt(tiny_nodes, frozen=False)
    plain(prompts(3, plain.width), TEXTS).cross_entropy().backward()
    fast.loss(prompts(3, fast.width), TEXTS).backward()
    for (name, a), b in zip(plain.named_parameters(), fast.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_runner_adamw_is_fused_and_updates_like_the_reference_loop():
    from vlreg.runner.optim import build_optimizer, parameter_groups

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4))
    initial = model[0].weight.detach().clone()
    twin = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4))
    twin.load_state_dict(model.state_dict())
    fused = build_optimizer(parameter_groups(model, 0.05), 1e-2, (0.9, 0.999), 1e-8)
    reference = torch.optim.AdamW(parameter_groups(twin, 0.05), lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
                                  foreach=False)
    assert fused.defaults["fused"] and all(group["fused"] for group in fused.param_groups)
    data = torch.randn(64, 16, generator=torch.Generator().manual_seed(2))
    for step in range(5):
        for net, optimizer in ((model, fused), (twin, reference)):
            net(data[step * 8:(step + 1) * 8]).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert (model[0].weight - initial).abs().max() > 1e-3  # it did train


@pytest.mark.parametrize("options", [{"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0.7},
                                     {"do_sample": True, "top_p": 0.9, "num_return_sequences": 3}],
                         ids=["beams", "sampling"])
def test_generation_runs_the_shared_prefix_once_per_sample_with_the_same_tokens(tiny_nodes, options):
    llm = opt(tiny_nodes, prompt="a photo of")
    first = prompts(3, llm.width, torch.tensor([[True] * 4, [False, True, True, True], [True] * 4]))
    texts = ["what colour is it?", "a", "two green stars"]
    layer = llm.model.model.decoder.layers[0]
    shapes: list[tuple[int, int]] = []
    layer.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(inputs[0].shape[:2])))

    torch.manual_seed(5)
    fast = llm.generate_tokens(first, texts, max_new_tokens=6, **options)
    embeds, mask = llm.prompted_contexts(first, [f"a photo of {t}" for t in texts])
    copies = options.get("num_beams", options["num_return_sequences"])
    assert shapes[0] == (3, embeds.shape[1] - 1) and shapes[1] == (3 * copies, 1)  # prefix once, then one position
    assert all(rows == 3 * copies and length == 1 for rows, length in shapes[1:])

    torch.manual_seed(5)
    plain = llm.model.generate(inputs_embeds=embeds, attention_mask=mask.long(), max_new_tokens=6, min_new_tokens=0,
                               eos_token_id=llm.tokenizer.eos_token_id, pad_token_id=llm.pad_token_id, **options)
    assert torch.equal(fast, plain)
