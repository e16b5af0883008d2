"""The executable checks by name, in the order they run, apart from their code (``executable``
imports torch; a process that only names checks, such as the Engineer's, never does).

Cheap before expensive (the parameter count before the timing sweep); ``contract``,
``instantiate`` and ``shape`` are prerequisites: after one fails the rest cannot run.
"""

PREREQUISITES = ("contract", "instantiate", "shape")
CHECK_ORDER = (
    "contract", "instantiate", "shape", "causality", "batch_independence", "odd_lengths", "param_budget",
    "complexity", "finite_gradients", "training_smoke",
)
