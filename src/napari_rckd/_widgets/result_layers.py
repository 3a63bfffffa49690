"""napari layers over result stores: labels for nuclei, classes and outlines, an image for
probabilities, each placed in µm exactly over the slide.

Layers show the stores' levels directly (numpy tiles for live results), not
``dask_levels()``: napari keeps an opportunistic dask cache keyed by task name, which would
keep showing a tile's old (empty) pixels after the worker wrote it.
"""

from __future__ import annotations

import numpy as np

from napari_rckd.inference.store import ResultStore

# the source each result belongs to, and how it is shown (None: kept in the store only)
RESULT_SOURCE = {
    "preview_labels": "nuclei",  # beneath the nuclei: shown until they arrive
    "nuclei_labels": "nuclei",
    "subtype_class": "subtype",
    "region_prob": "region",
    "region_mask": "region",
}


class ChannelView:
    """One channel of a C×H×W array, read lazily (napari slices it like a 2-D array)."""

    def __init__(self, array, channel: int):
        self.array, self.channel = array, channel
        self.shape = tuple(array.shape[1:])
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.array[(self.channel, *key)])

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[...], dtype=dtype)


def _placement(store: ResultStore) -> dict:
    """µm scale and half-pixel translation that put a result exactly over the slide layer."""
    scale, shift = store.scale_um(0), store.translate_um(0)
    return dict(scale=(scale, scale), translate=(shift, shift), units=("um", "um"))


def _layer(levels: list, kwargs: dict, kind: str) -> tuple:
    """LayerData; napari misreads a one-level multiscale list as 1-D, so one level is plain."""
    if len(levels) == 1:
        return (levels[0], {**kwargs, "multiscale": False}, kind)
    return (levels, {**kwargs, "multiscale": True}, kind)


def _class_colormap(colors: list[str]) -> dict:
    """Value k+1 = class k in its colour; 0 (not computed / background) transparent."""
    colormap = {None: "transparent", 0: "transparent"}
    colormap.update({k + 1: color for k, color in enumerate(colors)})
    return colormap


def result_layer_data(
    stores: dict[str, ResultStore], classes: dict[str, tuple[list, list]], prefix: str
) -> list[tuple]:
    """napari LayerData for each displayable result; ``classes`` maps a source name to its
    (class names, class colours)."""
    layers = []
    if "preview_labels" in stores:
        store = stores["preview_labels"]
        kwargs = dict(name=f"{prefix} nuclei preview", opacity=0.3, **_placement(store))
        layers.append(_layer(list(store.levels), kwargs, "labels"))
    if "nuclei_labels" in stores:
        store = stores["nuclei_labels"]
        kwargs = dict(name=f"{prefix} nuclei", opacity=0.6, **_placement(store))
        layers.append(_layer(list(store.levels), kwargs, "labels"))
    if "subtype_class" in stores:
        store, (names, colors) = stores["subtype_class"], classes["subtype"]
        kwargs = dict(
            name=f"{prefix} subtype",
            opacity=0.35,
            colormap=_class_colormap(colors),
            features={"index": np.arange(len(names) + 1), "class": ["", *names]},
            metadata={"probabilities": stores.get("subtype_prob"), "class_names": names},
            **_placement(store),
        )
        layers.append(_layer(list(store.levels), kwargs, "labels"))
    if "region_prob" in stores:
        store, (names, _) = stores["region_prob"], classes["region"]
        channel = len(names) - 1  # the last class: the positive one ("cancer") by convention
        kwargs = dict(
            name=f"{prefix} {names[channel]} probability",
            colormap="inferno",
            contrast_limits=(0.0, 1.0),
            opacity=0.45,
            blending="translucent",
            metadata={"class_name": names[channel]},
            **_placement(store),
        )
        layers.append(
            _layer([ChannelView(a, channel) for a in list(store.levels)], kwargs, "image")
        )
    if "region_mask" in stores:
        store, (names, colors) = stores["region_mask"], classes["region"]
        kwargs = dict(
            name=f"{prefix} region outline",
            colormap=_class_colormap(colors),
            features={"index": np.arange(len(names) + 1), "class": ["", *names]},
            **_placement(store),
        )
        layers.append(_layer(list(store.levels), kwargs, "labels"))
    return layers


def source_classes(sources) -> dict[str, tuple[list, list]]:
    """(class names, colours) of the sources that have classes."""
    return {
        s.name: (list(s.class_names), list(s.class_colors))
        for s in sources
        if hasattr(s, "class_names")
    }


def add_result_layers(viewer, stores, classes, prefix: str) -> dict[str, object]:
    """Add the result layers to ``viewer``; returns them by result name."""
    added = {}
    names = [n for n in RESULT_SOURCE if n in stores]
    for name, (data, kwargs, kind) in zip(
        names, result_layer_data(stores, classes, prefix), strict=True
    ):
        added[name] = getattr(viewer, f"add_{kind}")(data, **kwargs)
    if "region_mask" in added:
        added["region_mask"].contour = 2  # an outline over the probability, not a fill
    return added
