"""Speed benchmarks: nnkit against hand-written JAX and its peers (Flax, Equinox, Haiku,
PyTorch), side by side. Run ``python -m benchmarks.run``; see ``benchmarks/README.md``."""
