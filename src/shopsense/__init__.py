"""shopsense: recommendations and precision marketing from one retail event stream."""

__version__ = "0.1.0"

import os

# implicit (ALS/BPR) asks for single-threaded OpenBLAS; it must be set before numpy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
