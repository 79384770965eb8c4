"""Prompters: text -> the soft prompts from which a frozen LLM would reconstruct it.

- :mod:`.pformer`: ``pformer`` (P-Former, Jian et al., NeurIPS 2023): trained on text alone
  (stage 0), then a frozen alignment target for any bridge in stages 1 and 2.

Each module is imported by the registry on the first lookup of one of its names.
"""
