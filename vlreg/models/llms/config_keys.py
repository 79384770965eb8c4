"""The keys of a transformers ``config:`` mapping, checked against its model type's config class.

transformers keeps any unknown keyword of a config as an attribute, so a misspelt size
(``hidden_sizee: 64``) would build a model of the default size without a word. An LLM
node's ``config:`` is annotated with :data:`TransformersConfig`, which validation checks
key by key against the config class of its ``model_type``: the class's ``__init__``
arguments, the attributes a default instance holds, the class's aliases
(``attribute_map``, e.g. T5's ``hidden_size`` for ``d_model``) and the generation settings
a model config may carry (``decoder_start_token_id``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Mapping

from ...build import checked
from ...errors import ConfigError, did_you_mean


@functools.lru_cache(maxsize=None)
def config_keys(config_class: type) -> frozenset[str]:
    """Every key a config class understands."""
    from transformers import GenerationConfig

    keys = {"model_type", *getattr(config_class, "attribute_map", {}), *GenerationConfig().to_dict()}
    for cls in config_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None:
            keys.update(name for name, p in inspect.signature(init).parameters.items()
                        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    try:
        keys.update(config_class().to_dict())
    except Exception:  # noqa: BLE001 - a class without usable defaults: its signatures say enough
        pass
    return frozenset(keys)


def check_config_keys(config: Mapping[str, Any], where: str) -> None:
    """Raise ConfigError for a ``model_type`` transformers does not know or a key its config class lacks."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not model_type:
        raise ConfigError(f"{where}: a transformers config needs model_type (e.g. opt, t5)")
    known_types = list(CONFIG_MAPPING.keys())
    if model_type not in known_types:
        raise ConfigError(f"{where}.model_type: transformers knows no model type {model_type!r}"
                          f"{did_you_mean(str(model_type), known_types)}")
    config_class = CONFIG_MAPPING[model_type]
    known = config_keys(config_class)
    for key in config:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} for transformers' {config_class.__name__}"
                              f"{did_you_mean(str(key), known)}")


TransformersConfig = checked(dict, check_config_keys)
"""The annotation of a transformers config mapping (``{model_type: opt, hidden_size: 64, ...}``)."""
