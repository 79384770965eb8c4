"""Fast paths give the results of the plain computations they replace.

- ``CausalLM.loss`` runs the output head on the scored positions only: the same loss and
  gradients as ``forward(...).cross_entropy()`` over full logits.
- The runner's AdamW is torch's fused kernel: the same updates as the reference loop.
- Decoder-only generation with beams (or several returned sequences) runs the shared prefix
  once per sample: the same tokens as ``generate()`` on the repeated rows.
- Packed (padding-free) training batches give the padded loss and gradients, for each model
  type that packs.
- Pixel normalisation without temporaries gives exactly the reference values; worker batches
  are stacked straight into shared memory.
- Stage 1's ITM reuses the query pass's cross-attention keys and values: same losses and gradients.
"""

from __future__ import annotations

import numpy as np
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


# -- padding-free packing ----------------------------------------------------------------------
CONFIGS = {
    "opt": dict(model_type="opt", hidden_size=256, word_embed_proj_dim=256, ffn_dim=1024, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=128, dropout=0.0),
    "gpt2": dict(model_type="gpt2", n_embd=256, n_layer=2, n_head=4, n_positions=128, resid_pdrop=0.0, embd_pdrop=0.0,
                 attn_pdrop=0.0),
    "llama": dict(model_type="llama", hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128),
}
UNEVEN = ["a red circle", "a small blue square on the left of a large green star near the top of the picture",
          "two stars", "a yellow cross at the bottom right and a purple circle in the centre of the picture"]


def wide_llm(tiny_nodes, model_type: str, **overrides):
    """A 256-wide causal LLM of ``model_type`` on the tests' OPT-style tokenizer (ids < 410)."""
    config = {**CONFIGS[model_type], "vocab_size": 410, "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2}
    torch.manual_seed(0)
    return build("llm", {"name": "causal_lm", "tokenizer": tiny_nodes["opt"]["tokenizer"], "config": config,
                         **overrides})


def test_plan_rows_packs_only_where_it_saves_work():
    from vlreg.models.llms.packing import plan_rows

    assert plan_rows([40, 40, 40, 40], width=1024, ffn=4096) == [[0], [1], [2], [3]]  # nothing to gain
    assert plan_rows([60, 20, 20, 20, 60], width=1024, ffn=4096) == [[0], [4], [1, 2, 3]]  # three rows of 60
    assert plan_rows([40, 30, 30], width=1024, ffn=4096) == [[0, 1, 2]]  # 100 positions instead of 120
    assert len(plan_rows([40, 30, 30], width=16, ffn=64)) == 3  # narrow: a longer row's attention costs more


def test_pack_lays_sequences_end_to_end_with_their_own_positions_and_a_block_mask():
    from vlreg.models.llms.packing import PackingPlan, pack

    mask = torch.tensor([[True, True, True], [False, True, True], [True, False, False]])
    embeds = torch.arange(9.0).view(3, 3, 1)
    positions = torch.tensor([[0, 1, 2], [0, 0, 1], [0, 0, 0]])
    targets = torch.tensor([[5, 6, -100], [-100, 7, -100], [8, -100, -100]])
    packed = pack(embeds, mask, positions, targets, PackingPlan([[0, 2], [1]], dense_mask=True))
    assert packed.embeds[..., 0].tolist() == [[0, 1, 2, 6], [4, 5, 0, 0]]
    assert packed.positions.tolist() == [[0, 1, 2, 0], [0, 1, 0, 0]]
    assert packed.targets.tolist() == [[5, 6, -100, 8], [7, -100, -100, -100]]
    assert packed.attention[0, 0].int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]]
    assert packed.attention[1, 0].int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_packed_loss_equals_the_padded_one(tiny_nodes, model_type):
    from vlreg.models.llms.packing import packed_plan

    llm = wide_llm(tiny_nodes, model_type, prompt="a photo of")
    mask = torch.tensor([[True] * 4, [False, True, True, True], [True] * 4, [True] * 4])
    first = prompts(4, llm.width, mask)
    second = Prompts(first.embeds.detach().clone().requires_grad_(True), mask)
    _, sequence_mask, _ = llm.sequences(first, UNEVEN)
    plan = packed_plan(llm.model.config, sequence_mask)
    assert plan is not None and len(plan.rows) < 4 and plan.dense_mask  # this batch is packed (CPU)

    reference = llm(first, UNEVEN).cross_entropy()
    reference.backward()
    packed = llm.loss(second, UNEVEN)
    packed.backward()
    torch.testing.assert_close(packed, reference, rtol=0, atol=2e-6)
    torch.testing.assert_close(second.embeds.grad, first.embeds.grad, rtol=0, atol=1e-7)


def test_packed_loss_gives_a_trainable_llm_the_same_weight_gradients(tiny_nodes):
    plain, packed = wide_llm(tiny_nodes, "opt", frozen=False), wide_llm(tiny_nodes, "opt", frozen=False)
    plain(prompts(4, plain.width), UNEVEN).cross_entropy().backward()
    packed.loss(prompts(4, packed.width), UNEVEN).backward()
    for (name, a), b in zip(plain.named_parameters(), packed.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-7, msg=name)


# -- data ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 7, 3), (2, 5, 7, 3)], ids=["image", "video"])
def test_normalize_gives_exactly_the_reference_values(shape):
    from vlreg.data.processors import CLIP_MEAN, CLIP_STD
    from vlreg.data.processors.image import normalize

    pixels = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy()
    reference = (torch.from_numpy(pixels).float() / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    out = normalize(pixels)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert torch.equal(out, reference.movedim(-1, -3))
    assert torch.equal(normalize(pixels[..., ::-1, :]), normalize(np.ascontiguousarray(pixels[..., ::-1, :])))


def _collate_and_report(items):
    from vlreg.data.collate import collate

    batch = collate(items)
    batch["stacked_in_shared_memory"] = batch["video"].is_shared()
    return batch


def test_collate_stacks_worker_batches_straight_into_shared_memory():
    from torch.utils.data import DataLoader

    from vlreg.data.collate import collate

    items = [{"video": torch.full((2, 3, 4, 4), float(i)), "text_input": f"clip {i}"} for i in range(4)]
    local = collate(items)
    assert torch.equal(local["video"], torch.stack([item["video"] for item in items]))
    assert not local["video"].is_shared() and local["text_input"] == [f"clip {i}" for i in range(4)]
    (batch,) = list(DataLoader(items, batch_size=4, num_workers=1, collate_fn=_collate_and_report))
    assert batch["stacked_in_shared_memory"] and torch.equal(batch["video"], local["video"])


# -- stage 1 ------------------------------------------------------------------------------------------
def test_itm_reuses_the_query_pass_keys_and_values_with_the_same_losses_and_gradients(tiny_nodes):
    from vlreg.models.base import Features
    from vlreg.objectives.blip2_stage1 import Blip2Stage1

    node = {**tiny_nodes["qformer"], "vision_width": 24, "dropout": 0.0}
    torch.manual_seed(0)
    shared, plain = build("bridge", node), build("bridge", node)
    plain.load_state_dict(shared.state_dict())
    plain.cross_keys = lambda features: [None] * len(plain.layers)  # every pass projects the tokens itself
    features = Features(torch.randn(4, 5, 24, generator=torch.Generator().manual_seed(3)))
    texts, ids = TEXTS + ["one yellow cross"], torch.tensor([0, 1, 2, 2])
    rows = {}
    for name, model in (("shared", shared), ("plain", plain)):
        projected = []
        model.layers[0].cross_attn.key.register_forward_hook(lambda m, i, o: projected.append(i[0].shape[0]))
        torch.manual_seed(7)  # the hard negatives are drawn
        losses, _ = Blip2Stage1().losses(model, features, texts, image_ids=ids)
        sum(losses.values()).backward()
        rows[name] = (projected, losses)
    assert rows["shared"][0] == [4] and rows["plain"][0] == [4, 4]  # ITM projects no image again
    for key in ("itc", "itm", "itg"):
        torch.testing.assert_close(rows["shared"][1][key], rows["plain"][1][key], rtol=0, atol=1e-6)
    for (name, a), b in zip(shared.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)
