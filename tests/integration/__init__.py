"""The integration tier: the recipes run as a user runs them, every project dry-run, torchrun, pip installs,
the benchmark suites on a trained project. ``tests/conftest.py`` marks every test here slow."""
