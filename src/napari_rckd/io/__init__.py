"""Slides and other files: `open_slide` gives a lazy `Slide`; see docs/slides.md."""

from napari_rckd.io.find import find_slides
from napari_rckd.io.opener import SLIDE_SUFFIXES, open_slide
from napari_rckd.io.slide import Slide, SlideError

__all__ = ["SLIDE_SUFFIXES", "Slide", "SlideError", "find_slides", "open_slide"]
