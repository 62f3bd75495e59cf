"""graphspec's runtime: numba kernels, the executor, optimizers, training and data."""
import os

# OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after each call before they sleep. The
# recurrent loops that follow the big hoisted GEMMs run on our own threads (runtime/kernels/
# rows.py and packed.py), which then share a core with a spinning BLAS thread: the loop's
# second half waits for the slowed thread. 2^20 cycles (~0.4 ms) lets the spinner sleep before
# it matters; shorter costs the B=1 models, whose many small BLAS calls then wake sleeping
# threads. Measured (LSTM training step, quiet 2-core Xeon): B=32/H=128 12.7 -> 9.8 ms,
# B=64/H=512 245 -> 176 ms, B=1 unchanged; 2^12: B=1/H=32 0.24 -> 0.30 ms. Read once, when
# scipy's OpenBLAS loads (runtime/kernels/blas.py): a value the user sets wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")
