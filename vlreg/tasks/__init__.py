"""Tasks: what a training step and an evaluation mean, one file per task.

A task (a subclass of :class:`.base.Task`) builds its model from the stage's ``model:`` node,
turns a batch into named losses (``train_step``) and evaluates on a dataset, writing
predictions in the official result formats and returning metrics. The stages of BLIP-2 and
P-Former train the same way (the model's forward runs the objectives its ``losses`` lists,
:mod:`vlreg.objectives`); a pretraining task is defined by its objective (the model's losses
must list it; without losses it is what the model trains), and each task evaluates its way:

=================  ==================  ======================================================
task               defining objective  evaluation
=================  ==================  ======================================================
pformer_pretrain   pformer_stage0      reconstruction of held-out sentences from prompts alone
pretrain_stage1    blip2_stage1        retrieval (ITC, then ITM re-ranking of the top k)
pretrain_stage2    lm                  captioning
caption            (model.losses)      captioning (COCO caption results, pycocoevalcap scores)
vqa                (model.losses)      VQA (official results format and accuracy)
retrieval          (model.losses)      retrieval (rankings and recall)
=================  ==================  ======================================================
"""
