"""Measures of agreement with ground truth, pure numpy: ``nuclei`` (pixel Dice, AJI, PQ) and
``classification`` (confusion-matrix metrics)."""
