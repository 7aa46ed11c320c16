"""The course's examples, reproduced with nnkit. Run all: ``python -m experiments.run_all``."""
