"""vlreg's tests. ``tests/vlreg/`` mirrors the package, ``tests/integration/`` is the integration tier (all of it
marked slow), ``tests/benchmarks/`` tests the benchmarks' own code, ``tests/assets/`` holds the files tests read.
The fast tier: ``python -m pytest -q -m "not slow" tests``."""
