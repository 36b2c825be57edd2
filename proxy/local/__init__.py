"""molt's own model server: a causal LM on CPU or GPU, versions hot-swapped from the registry."""
