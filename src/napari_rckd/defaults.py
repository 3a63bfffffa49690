"""What runs and what is written when the user does not say: one place, cheap to import.

The command line reads these while building ``--help`` (so this module imports nothing heavy);
the engine (``inference.analysis``) and the widgets use the same names.
"""

# The nuclei model that runs when none is chosen. A teacher spec, so swapping what "builtin"
# means (a classical detector today, a learned model later) changes nothing elsewhere.
DEFAULT_NUCLEI = "builtin"
# Result kinds an analysis computes, and the files it can export.
KINDS = ("nuclei", "subtype", "region")
EXPORTS = ("geojson", "csv", "ome-tiff")
DEFAULT_EXPORTS = ("geojson", "csv")
