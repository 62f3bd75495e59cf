"""graphspec's runtime: numba kernels, the executor, optimizers, training and data."""
import os

# OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after each call before they sleep. The
# recurrent loops that follow the big hoisted GEMMs run on our own threads (runtime/kernels/
# rows.py and packed.py), which then share a core with a spinning BLAS thread: the loop's
# second half waits for the slowed thread. With 2^16 cycles (~30 us) the spinner sleeps before
# it matters, at a cost to B=1 models, whose small BLAS calls then wake sleeping threads more
# often. Training steps on a quiet 2-core Xeon, 2^16 against 2^20 (medians of two runs):
# LSTM B=8/H=128 2.85 vs 3.45 ms, B=32/H=128 9.1-10.7 vs 9.4-10.8, RNN B=32/H=128 3.6-4.3 vs
# 4.1-4.5; LSTM B=1/H=32 0.22-0.25 vs 0.20-0.21, B=1/H=128 1.14-1.18 vs 0.94-1.01 (still 6x
# torch there). Read once, when scipy's OpenBLAS loads (runtime/kernels/blas.py): a value the
# user sets wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")
