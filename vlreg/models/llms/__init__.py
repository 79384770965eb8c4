"""Frozen language models over transformers, taking soft prompts before their text.

- ``causal_lm`` (:mod:`.causal`): decoder-only models (OPT, and any ``AutoModelForCausalLM``).
- ``seq2seq_lm`` (:mod:`.seq2seq`): encoder-decoder models (T5 / FlanT5, and any ``AutoModelForSeq2SeqLM``).

What both share (loading, freezing, tokens, loss, generation) is in :mod:`.common`; padding-free
training batches for decoder-only models are in :mod:`.packing`.
Importing this package imports neither transformers nor the adapters.
"""
