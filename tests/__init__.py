"""vlreg's tests. ``tests/vlreg/`` mirrors the package, ``tests/integration/`` is the integration tier,
``tests/benchmarks/`` tests the benchmarks' own code, ``tests/assets/`` holds the files tests read."""
