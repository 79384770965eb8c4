"""The bottom layer: files that hold weights and runs, read and written safely.

Everything above uses it, and it imports nothing of vlreg but :mod:`vlreg.errors`:

- :mod:`.fingerprints`: sha256 of files, sets of files, tensors and text;
- :mod:`.weights`: weight files read without running their code (safetensors, pickles with
  ``weights_only``) and written durably;
- :mod:`.files`: durable and atomic writes (fsync, write-then-rename);
- :mod:`.sources`: the ``weight_source()`` protocol: frozen weights recorded by source and checksum;
- :mod:`.renaming`: a state dict's keys renamed by rules (other code bases' parameter names and vlreg's);
- :mod:`.checkpoints`: the vlreg checkpoint format: finding, verifying and reading checkpoints;
- :mod:`.run_dir`: :class:`~vlreg.io.run_dir.RunDir`, the files of a run directory, by name;
- :mod:`.run_paths`: the paths a run's model names, recorded and found again after a move.
"""
