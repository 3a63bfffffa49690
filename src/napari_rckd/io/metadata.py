"""What a TIFF says about its physical pixel size, magnification and scanner.

Pure functions over ``tifffile`` objects. An mpp is only reported when the file states
it in a unit we can trust; a missing or unit-less value gives ``None``, never a guess,
because a wrong mpp silently feeds models tiles at the wrong scale.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

import tifffile

# micrometres per unit of an OME PhysicalSize*Unit
_OME_UNITS_UM = {
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "nm": 1e-3,
    "Å": 1e-4,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "pm": 1e-6,
}
# micrometres per TIFF ResolutionUnit (2 = inch, 3 = centimetre; 1 = none is not a unit)
_TIFF_UNITS_UM = {2: 25400.0, 3: 10000.0}
# plausible range for a microscope image; anything outside is a placeholder (e.g. 72 dpi)
_MPP_RANGE = (0.01, 100.0)


@dataclass(frozen=True)
class SlideMetadata:
    mpp: float | None
    magnification: float | None
    vendor: str


def read_metadata(tif: tifffile.TiffFile) -> SlideMetadata:
    """Collect mpp, magnification and vendor, trying the vendor's own fields first."""
    page = tif.pages.first
    vendor = _vendor(tif)
    mpp = magnification = None
    if tif.is_svs:
        fields = aperio_fields(page.description)
        mpp = _float(fields.get("MPP"))
        magnification = _float(fields.get("AppMag"))
    elif tif.is_ome:
        mpp, magnification = _ome_mpp_and_magnification(tif.ome_metadata or "")
    elif tif.is_ndpi:
        magnification = _float(page.tags.valueof(65421))  # NDPI Magnification tag
    elif tif.is_scn and tif.scn_metadata:
        magnification = _float(_xml_attribute(tif.scn_metadata, "objective"))
    if mpp is None:
        mpp = _resolution_mpp(page)
    if mpp is not None and not _MPP_RANGE[0] <= mpp <= _MPP_RANGE[1]:
        mpp = None
    return SlideMetadata(mpp=mpp, magnification=magnification, vendor=vendor)


def aperio_fields(description: str) -> dict[str, str]:
    """Aperio's ImageDescription: a header line, then ``key = value`` pairs split by ``|``."""
    fields = {}
    for part in description.split("|")[1:]:
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _vendor(tif: tifffile.TiffFile) -> str:
    for flag, name in (
        ("is_svs", "aperio"),
        ("is_ndpi", "hamamatsu"),
        ("is_scn", "leica"),
        ("is_bif", "ventana"),
        ("is_qpi", "akoya"),
        ("is_philips", "philips"),
        ("is_ome", "ome"),
    ):
        if getattr(tif, flag, False):
            return name
    return "generic-tiff"


def _ome_mpp_and_magnification(ome_xml: str) -> tuple[float | None, float | None]:
    try:
        root = ElementTree.fromstring(ome_xml)
    except ElementTree.ParseError:
        return None, None
    mpp = magnification = None
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Pixels" and mpp is None and "PhysicalSizeX" in element.attrib:
            unit = element.attrib.get("PhysicalSizeXUnit", "µm")
            value = _float(element.attrib["PhysicalSizeX"])
            if value is not None and unit in _OME_UNITS_UM:
                mpp = value * _OME_UNITS_UM[unit]
        elif tag == "Objective" and magnification is None:
            magnification = _float(element.attrib.get("NominalMagnification"))
    return mpp, magnification


def _resolution_mpp(page: tifffile.TiffPage) -> float | None:
    """XResolution is pixels per ResolutionUnit; only centimetre and inch are real units."""
    unit = page.tags.valueof("ResolutionUnit")
    resolution = page.tags.valueof("XResolution")
    if unit is None or int(unit) not in _TIFF_UNITS_UM or not resolution:
        return None
    numerator, denominator = resolution if isinstance(resolution, tuple) else (resolution, 1)
    if not numerator or not denominator:
        return None
    return _TIFF_UNITS_UM[int(unit)] * denominator / numerator


def _xml_attribute(xml: str, name: str) -> str | None:
    match = re.search(rf'{name}="([^"]+)"', xml) or re.search(rf"<{name}>([^<]+)<", xml)
    return match.group(1) if match else None


def _float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
