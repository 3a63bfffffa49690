"""napari glue: the dock widgets and the live-analysis binding of a viewer to the engine.

This is the only package that imports Qt, magicgui or napari; everything it calls (inference,
training, io) runs headless. Widgets lay out and wire controls and delegate to plain classes.
"""
