"""Bounds shared by the command line and the engine, importable without torch.

argparse checks flags against them while parsing (so a refusal answers at once, before torch
loads), and the engine's configs check the same bounds for Python callers.
"""

# Adam-family steps move each weight by about lr; above this no run converges, and far
# above it (1e300) the optimizer overflows before the loss can show it.
MAX_LR = 10.0
