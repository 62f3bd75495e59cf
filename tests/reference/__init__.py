"""Outside references for every concept of specs/ (issue 10): graphspec's loss and gradients
against models written from the equations in NumPy float64 (models.py, over the small autodiff
in autograd.py, itself checked by finite differences), and against torch autograd where torch
is installed. `python -m tests.reference.report` prints the worst error of every case."""
