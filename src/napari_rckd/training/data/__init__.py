"""Training data: stage-1 tissue tiles with cached teacher responses, stage-2 labelled sets.

Datasets yield dicts of tensors (see docs/architecture.md): stage 1 ``image`` and
``target``; classification ``image``, ``label`` and ``group``; segmentation ``image`` and
``mask``. Importing this package imports torch.
"""
