"""Where each built-in component lives: ``{kind: {name: module}}``.

The registry imports a module on the first lookup of one of its names; the module
registers the component with :func:`vlreg.register`. A test checks that this table
and the decorators agree.
"""

_ENCODERS = "vlreg.models.encoders"
_BRIDGES = "vlreg.models.bridges"
_LLMS = "vlreg.models.llms"
_DATA = "vlreg.data"
_PROCESSORS = "vlreg.data.processors"
_METRICS = "vlreg.metrics"
_WORLD = "vlreg.world"  # the synthetic world's stages: a client of the public API, registered like a plugin

BUILTINS: dict[str, dict[str, str]] = {
    "encoder": {
        "timm_vit": f"{_ENCODERS}.timm_vit",
        "eva_vit_g": f"{_ENCODERS}.timm_vit",
        "clip_vit_l": f"{_ENCODERS}.timm_vit",
        "video": f"{_ENCODERS}.video",
        "precomputed": f"{_ENCODERS}.precomputed",
    },
    "bridge": {
        "qformer": f"{_BRIDGES}.qformer",
        "linear": f"{_BRIDGES}.projectors",
        "mlp": f"{_BRIDGES}.projectors",
        "perceiver": f"{_BRIDGES}.perceiver",
    },
    "prompter": {
        "pformer": "vlreg.models.prompters.pformer",
    },
    "llm": {
        "causal_lm": f"{_LLMS}.causal",
        "seq2seq_lm": f"{_LLMS}.seq2seq",
    },
    "objective": {
        "blip2_stage1": "vlreg.objectives.blip2_stage1",
        "lm": "vlreg.objectives.lm",
        "pformer_alignment": "vlreg.objectives.pformer_alignment",
        "pformer_stage0": "vlreg.objectives.pformer_stage0",
    },
    "dataset": {
        "coco_caption": f"{_DATA}.coco",
        "coco_retrieval": f"{_DATA}.coco",
        "vqav2": f"{_DATA}.vqav2",
        "msrvtt_caption": f"{_DATA}.msrvtt",
        "msrvtt_qa": f"{_DATA}.msrvtt",
        "msrvtt_retrieval": f"{_DATA}.msrvtt",
        "webdataset_pairs": f"{_DATA}.webdataset",
        "text_lines": f"{_DATA}.sentences",
        "text_jsonl": f"{_DATA}.sentences",
        "text_shards": f"{_DATA}.sentences",
        "caption_corpus": f"{_DATA}.sentences",
        "concat": f"{_DATA}.concat",
        "described_questions": f"{_DATA}.described_questions",
        "in_memory": f"{_DATA}.in_memory",
        "world_attributes": "vlreg.data.world.attributes",
    },
    "processor": {
        "image_train": f"{_PROCESSORS}.image",
        "image_eval": f"{_PROCESSORS}.image",
        "video_train": f"{_PROCESSORS}.video",
        "video_eval": f"{_PROCESSORS}.video",
        "npy_features": f"{_PROCESSORS}.features",
        "caption": f"{_PROCESSORS}.text",
        "question": f"{_PROCESSORS}.text",
    },
    "task": {
        "caption": "vlreg.tasks.caption",
        "pretrain_stage2": "vlreg.tasks.caption",
        "vqa": "vlreg.tasks.vqa",
        "retrieval": "vlreg.tasks.retrieval",
        "pretrain_stage1": "vlreg.tasks.retrieval",
        "pformer_pretrain": "vlreg.tasks.pformer_pretrain",
        "lm_pretrain": "vlreg.tasks.lm_pretrain",
        "make_world": f"{_WORLD}.make_world",
        "train_tokenizers": f"{_WORLD}.train_tokenizers",
        "attribute_pretrain": f"{_WORLD}.attribute_pretrain",
    },
    "runner": {
        "trainer": "vlreg.runner.trainer",
    },
    "metric": {
        "caption_scores": f"{_METRICS}.caption",
        "vqa_accuracy": f"{_METRICS}.vqa",
        "retrieval_recall": f"{_METRICS}.retrieval",
    },
    "suite": {
        "coco": "vlreg.bench.suite",
        "vqav2": "vlreg.bench.suite",
        "msrvtt": "vlreg.bench.suite",
    },
}
