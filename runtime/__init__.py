"""graphspec's runtime: numba kernels, the executor, optimizers, training and data."""
import os

# OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after each call before they sleep. The
# recurrent products that follow the big hoisted GEMMs run on our own team of threads
# (runtime/kernels/packed.py), whose worker then shares its core with a spinning BLAS thread and
# the team turns itself off: LSTM B=64/H=512, a training step 245 -> 190 ms with 2^22 cycles
# (~2 ms; 2^18 and below cost the B=1 models ~20% in BLAS wake-ups). Read once, when scipy's
# OpenBLAS loads (runtime/kernels/blas.py): a value the user sets wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "22")
