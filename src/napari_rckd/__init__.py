"""napari-rckd: whole-slide pathology analysis with CSAT models and RCKD distillation.

Importing the package stays light (no torch, no Qt): the napari reader and the
CLI import heavy modules only when they are used.
"""

__version__ = "0.1.0"
