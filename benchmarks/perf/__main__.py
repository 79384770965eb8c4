"""``python -m benchmarks.perf``: every performance benchmark, one table (see :mod:`benchmarks.perf.run`)."""

from .run import main

raise SystemExit(main())
