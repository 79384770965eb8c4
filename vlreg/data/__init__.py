"""Data: readers of the official dataset formats, media processors and the synthetic world.

Importing this package imports nothing heavy; each reader, processor and the world
generator (:mod:`vlreg.data.world`) are imported where they are used.
"""
