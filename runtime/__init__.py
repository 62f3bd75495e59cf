"""graphspec's runtime: numba kernels, the executor, optimizers, training and data."""
