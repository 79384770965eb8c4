"""The synthetic world as stages of a project: a client of vlreg's public API, registered like a plugin.

:mod:`vlreg.data.world` writes the world's files (pictures, clips, captions, questions, a corpus
in the official formats) and reads its attribute labels (the ``world_attributes`` dataset). This
package makes the world part of a project, as the recipes on it use it:

- :mod:`.make_world`: ``make_world``, the first stage, which generates the world when it is missing;
- :mod:`.train_tokenizers`: ``train_tokenizers``, the tokenizers of the world's models, trained on its text;
- :mod:`.attribute_pretrain`: ``attribute_pretrain``, the world's frozen frame encoder, pretrained
  without captions on scene attributes.

Nothing in the pipeline or the other layers imports it: the registry finds these names in
:mod:`vlreg.builtins`, as it would find a plugin's, and a project on real data never meets them.
"""
