"""Test-wide settings. OpenMP threads that spin while waiting make torch on a busy 2-core machine ~20x
slower; a passive wait policy must be set before torch is first imported."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "0")
