"""Tasks: what a training step and an evaluation mean, one file per task.

A task builds its model from the stage's ``model:`` node, turns a batch into named
losses (``train_step``) and evaluates on a dataset, writing predictions in the
official result formats and returning metrics. The stages of BLIP-2 and P-Former
train the same way (the model's forward computes the configured losses) and differ
in what they evaluate:

=================  ======================================================
task               evaluation
=================  ======================================================
pformer_pretrain   reconstruction of held-out sentences from prompts alone
pretrain_stage1    retrieval (ITC, then ITM re-ranking of the top k)
pretrain_stage2    captioning
caption            captioning (COCO caption results, pycocoevalcap scores)
vqa                VQA (official results format and accuracy)
retrieval          retrieval (rankings and recall)
=================  ======================================================
"""
