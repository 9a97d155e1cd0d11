"""The ``surgcorpus`` command line: the only package that imports every layer.

Imports run one way: corpus ← builders ← trainers ← eval ← cli.

One module per command group; ``cli.main`` holds the typer app and mounts the groups.
"""
