"""The scripted demo: the whole workflow on the synthetic sample slide, through the real widgets.

`run_demo` opens the slide, docks the plugin's widgets, draws annotations derived from the
sample's ground-truth region map, trains (stage 1 + stage 2 classify in the Train widget, then
stage 2 segment from stage 1's student through the same job builder and training process),
follows a fixed pan-and-zoom path with live analysis, exports, and screenshots the viewer after
every step. Annotating and training go through the widgets' Qt-free sessions
(`AnnotationSession`, `TrainSession`), the objects the widgets' buttons call, with the widgets
docked and showing what the sessions do.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_rckd.errors import RckdError

log = logging.getLogger(__name__)

CLASSES = ("tumour", "stroma", "normal")
MASK_HALF = 1200  # level-0 px: the cancer region is painted in a 1.2 mm square, not everywhere
# A step is given up only when nothing it shows has moved for this long, so the wait grows
# with the work (a slow machine trains longer) and a stuck step is still reported.
STALL_S = 300


@dataclass
class DemoConfig:
    out: Path
    steps: int = 20  # optimizer steps per training stage
    tile_size: int = 128
    mpp: float = 1.0  # µm/px of training and of the trained models' tiles
    tiles: int = 64  # stage-1 tissue tiles
    batch_size: int = 4
    backbone: str = "rckd_csat"
    device: str = "cpu"


@dataclass
class Record:
    """What the demo did, written as ``demo.json``."""

    steps: list[dict] = field(default_factory=list)
    checkpoints: dict[str, str] = field(default_factory=dict)
    tiles_computed: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------- Qt-free: the annotations


def ground_truth_annotations(
    region_map: np.ndarray, downsample: int, per_class: int = 2, max_half: int = 6
) -> list[tuple[str, str, np.ndarray]]:
    """(class, shape type, level-0 vertices) well inside each class of the region map.

    Squares are centred where the chessboard distance to another class is largest, so each lies
    wholly in its class; the second shape of a class is an octagon (a polygon) for variety.
    """
    from scipy import ndimage

    from napari_rckd.io.synthetic import REGION_CLASSES

    shapes = []
    for name in CLASSES:
        inside = region_map == REGION_CLASSES.index(name)
        if not inside.any():
            raise RckdError(f"the sample's region map has no {name}; regenerate the sample")
        distance = ndimage.distance_transform_cdt(np.pad(inside, 1), "chessboard")[1:-1, 1:-1]
        for index in range(per_class):
            y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
            half = min(int(distance[y, x]) - 1, max_half)
            if half < 1:
                break
            cy, cx, r = (y + 0.5) * downsample, (x + 0.5) * downsample, (half + 0.5) * downsample
            distance[
                max(y - 3 * half, 0) : y + 3 * half + 1, max(x - 3 * half, 0) : x + 3 * half + 1
            ] = 0
            if index % 2 == 0:
                square = [[cy - r, cx - r], [cy + r, cx + r]]
                shapes.append((name, "rectangle", np.array(square, float)))
            else:
                angles = np.linspace(0, 2 * np.pi, 8, endpoint=False) + np.pi / 8
                ring = np.stack([cy + r * np.sin(angles), cx + r * np.cos(angles)], axis=1)
                shapes.append((name, "polygon", ring))
    return shapes


def cancer_mask(
    region_map: np.ndarray, downsample: int, mask_downsample: int, shape, centre, half: float
) -> np.ndarray:
    """The cancer-region Labels data painted in a ``half``-wide square (level-0 px) around
    ``centre``: 2 = tumour, 1 = other tissue, 0 = glass and outside (unlabelled)."""
    from napari_rckd.io.synthetic import BACKGROUND, TUMOUR

    coarse = np.where(region_map == TUMOUR, 2, np.where(region_map == BACKGROUND, 0, 1))
    factor = downsample // mask_downsample
    mask = np.kron(coarse.astype(np.uint8), np.ones((factor, factor), np.uint8))
    out = np.zeros(shape, np.uint8)
    (y0, x0), (y1, x1) = [
        np.clip((np.asarray(centre) + sign * half) / mask_downsample, 0, shape).astype(int)
        for sign in (-1, 1)
    ]
    out[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
    if len(np.unique(out[out > 0])) < 2:
        raise RckdError("the demo's cancer-region window holds one class only; widen it")
    return out


def link_sample(out: Path) -> Path:
    """The sample slide as seen from ``out`` (a link, else a copy): annotations saved next to it
    stay in the demo's folder, not in the shared sample cache."""
    from napari_rckd.io.samples import synthetic_sample_path

    source = synthetic_sample_path()
    target = out / source.name
    if not target.exists():
        try:
            target.symlink_to(source)
        except OSError:
            shutil.copyfile(source, target)
    return target


# ----------------------------------------------------------------------- the viewer side


def _process(seconds: float = 0.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while True:
        QApplication.processEvents()
        if time.monotonic() >= end:
            return
        time.sleep(0.02)


def _wait(condition, what: str, progress=lambda: None, stall_s: float = STALL_S) -> None:
    """Wait for ``condition`` while ``progress()`` (what the step shows) keeps changing."""
    seen, changed = progress(), time.monotonic()
    while not condition():
        now = progress()
        if now != seen:
            seen, changed = now, time.monotonic()
        elif time.monotonic() - changed > stall_s:
            raise RckdError(
                f"the demo gave up waiting for {what}: nothing moved for {stall_s:.0f} s"
            )
        _process(0.05)


def _shown(session):
    """What a training session says of its run (status, step line): changes while it trains."""
    return lambda: (session.status, session.eta)


class Demo:
    """Runs the steps in order; ``snap`` screenshots the viewer and records the step."""

    def __init__(self, viewer, config: DemoConfig):
        self.viewer, self.config = viewer, config
        self.out = Path(config.out)
        self.record = Record()
        self._t0 = time.monotonic()
        self._step_t0 = self._t0

    def snap(self, name: str, note: str, **extra) -> None:
        _process(0.3)
        path = self.out / f"{len(self.record.steps) + 1:02d}-{name}.png"
        self.viewer.screenshot(str(path), canvas_only=False, flash=False)
        now = time.monotonic()
        self.record.steps.append(
            dict(name=name, note=note, screenshot=path.name, seconds=round(now - self._step_t0, 2),
                 **extra)
        )  # fmt: skip
        self._step_t0 = now
        log.info("demo step %s: %s (%s)", name, note, path.name)

    def dock(self) -> dict:
        """The widgets `napari-rckd view` docks, as tabs (one shown at a time, full height)."""
        from napari_rckd._widgets.viewer import dock_widgets

        return dock_widgets(self.viewer)

    def open_slide(self):
        from napari_rckd._reader import slide_layer_data
        from napari_rckd._widgets.viewer import add_slide
        from napari_rckd.io import open_slide

        self.slide = open_slide(link_sample(self.out))
        self.layer = add_slide(self.viewer, slide_layer_data(self.slide))
        self.widgets = self.dock()
        self.snap("slide", "the synthetic sample slide opened, the plugin's widgets docked")

    def annotate(self):
        from napari_rckd.io.samples import SYNTHETIC_SEED, SYNTHETIC_SIZE
        from napari_rckd.io.synthetic import MAP_DOWNSAMPLE, synthetic_region_map

        session = self._show("Annotate slide").session
        session.create_layers(self.layer.name)
        shapes, labels = session.shapes, session.labels
        region_map = synthetic_region_map(SYNTHETIC_SIZE, SYNTHETIC_SEED)
        self.annotations = ground_truth_annotations(region_map, MAP_DOWNSAMPLE)
        for name, kind, vertices in self.annotations:
            session.choose_class(name)
            shapes.add(vertices, shape_type=kind)
        tumour = self.annotations[0][2].mean(axis=0)  # the first tumour square
        labels.data = cancer_mask(
            region_map, MAP_DOWNSAMPLE, labels.metadata["mask_downsample"], labels.data.shape,
            tumour, MASK_HALF,
        )  # fmt: skip
        session.save()
        self.shapes, self.labels = shapes, labels
        self.snap("annotations", f"{len(shapes.data)} class-labelled regions and a cancer-region "
                  "mask drawn from the sample's ground truth")  # fmt: skip

    def _show(self, widget_id: str):
        widget = self.widgets[widget_id]
        dock = widget.parent()
        if hasattr(dock, "raise_"):
            dock.raise_()
        return widget

    def _train_settings(self, widget) -> None:
        c = self.config
        widget.backbone.setCurrentText(c.backbone)
        widget.tile_size.setValue(c.tile_size)
        widget.mpp.setValue(c.mpp)
        widget.tiles.setValue(c.tiles)
        widget.batch_size.setValue(c.batch_size)
        widget.budget.setValue(c.steps)
        widget.stage2_budget.setValue(c.steps)
        widget.device.setCurrentText(c.device)

    def train(self):
        from napari_rckd._widgets.train_job import prepare_job

        widget = self._show("Train student")
        self._train_settings(widget)
        widget.out_dir.setText(str(self.out / "run-subtype"))
        widget.stage2_box.setChecked(True)
        widget.task.setCurrentText("classify")
        session = widget.session
        if not session.start(widget.settings(), self.shapes):
            raise RckdError(f"the Train widget refused the demo's job: {session.status}")
        _wait(lambda: session.step >= 1 or not session.running, "the first step")
        self.snap("training", "stage 1 distils the built-in teacher into the student (live loss)")
        _wait(lambda: not session.running, "stage 1 and stage 2 (classify)", _shown(session))
        self._check_trained(session, "subtype")
        stage1 = Path(session.process.out_dir) / "stage1" / "best.safetensors"
        self.record.checkpoints.update(nuclei=str(stage1), subtype=session.checkpoint)

        # Stage 2 (segment) from the same stage-1 student: the widget's job builder and session.
        settings = widget.settings()
        settings.stage1, settings.task = False, "segment"
        settings.out_dir = str(self.out / "run-region")
        job = prepare_job(settings, self.shapes, self.labels)
        job.stage2["init"] = str(stage1)
        session.start_job(job)
        _wait(lambda: not session.running, "stage 2 (segment)", _shown(session))
        self._check_trained(session, "region")
        self.record.checkpoints["region"] = session.checkpoint
        self.snap("trained", "stage 2 fine-tuned a subtype classifier and a cancer-region "
                  "segmenter on the annotations")  # fmt: skip

    @staticmethod
    def _check_trained(session, kind: str) -> None:
        if session.kind != kind or not session.checkpoint or "completed" not in session.status:
            raise RckdError(f"demo training ({kind}) did not finish: {session.status}")

    def analyze(self):
        from napari_rckd.defaults import DEFAULT_NUCLEI

        widget = self._show("Analyze slide")
        self.shapes.visible = self.labels.visible = False  # the results, not the annotations
        widget.image.setCurrentText(self.layer.name)
        widget.set_model("subtype", self.record.checkpoints["subtype"])
        widget.set_model("region", self.record.checkpoints["region"])
        widget.live_box.setChecked(True)
        if widget.live is None:
            raise RckdError(f"live analysis did not start: {widget.status.text()}")
        for index, (name, centre, zoom) in enumerate(self.path()):
            self._look(widget, centre, zoom)
            self.snap(f"live-{index + 1}-{name.replace(' ', '-')}", f"live analysis, teacher nuclei: {name}",
                      status=widget.status.text())  # fmt: skip
        self._count(widget.live.predictor, "teacher")
        widget.set_model("nuclei", self.record.checkpoints["nuclei"])  # the student's nuclei
        name, centre, zoom = self.path()[-1]
        self._look(widget, centre, zoom)
        self._count(widget.live.predictor, "student")
        self.snap("live-student", f"live nuclei from the stage-1 student: {name}",
                  status=widget.status.text())  # fmt: skip
        widget.set_model("nuclei", DEFAULT_NUCLEI)  # back to the teacher (cached) for exports
        self._look(widget, centre, zoom)
        self.analyze_widget = widget

    def path(self) -> list[tuple[str, tuple[float, float], float]]:
        """(what is shown, camera centre in µm, zoom): an overview of a tumour front, then closer
        looks at tumour, normal glands and stroma (the centres of the first annotations)."""
        mpp = self.slide.mpp
        first = {}
        for name, _, vertices in self.annotations:
            first.setdefault(name, tuple(float(v) * mpp for v in vertices.mean(axis=0)))
        return [
            ("tumour region", first["tumour"], 0.8),
            ("tumour closer", first["tumour"], 2.5),
            ("normal glands", first["normal"], 2.5),
            ("stroma", first["stroma"], 2.5),
        ]

    def _look(self, widget, centre, zoom) -> None:
        camera = self.viewer.scene.camera
        camera.center, camera.zoom = centre, zoom
        _process(0.2)
        # a hidden window never draws, and layers learn what is on screen when drawn: render once
        self.viewer.screenshot(canvas_only=True, flash=False)
        live = widget.live
        live.update_view()  # plan at once instead of waiting for the debounce
        _wait(
            lambda: live.predictor.wait_idle(0.05),
            "the visible tiles",
            lambda: sum(len(live.predictor.tiles_done(k)) for k in live.predictor.sources),
        )
        live.poll()

    def _count(self, predictor, label: str) -> None:
        for name in predictor.sources:
            key = f"{name} ({label})" if name == "nuclei" else name
            self.record.tiles_computed[key] = len(predictor.tiles_done(name))

    def export(self):
        widget = self.analyze_widget
        widget.export_dir.setText(str(self.out / "export"))
        for kind in ("geojson", "csv", "ome-tiff"):
            worker = widget._on_export_clicked(kind)
            if worker is None:
                raise RckdError(f"export {kind} failed: {widget.status.text()}")
            _wait(lambda: widget.worker is None, f"the {kind} export")
        files = sorted((self.out / "export").iterdir())
        self.record.files += [str(p.relative_to(self.out)) for p in files]
        self.snap("exported", f"exported {len(files)} files (GeoJSON, CSV, OME-TIFF)")

    def write_summary(self) -> Path:
        self.record.files += [step["screenshot"] for step in self.record.steps]
        summary = dict(
            config={k: str(v) for k, v in vars(self.config).items()},
            seconds=round(time.monotonic() - self._t0, 1),
            **vars(self.record),
        )
        from napari_rckd.atomic import write_json_atomic

        path = self.out / "demo.json"
        write_json_atomic(path, summary)
        log.info("demo finished in %.0f s: %s", summary["seconds"], path)
        return path


def run_demo(viewer, config: DemoConfig) -> Path:
    """Every step in order; returns the path of ``demo.json``."""
    Path(config.out).mkdir(parents=True, exist_ok=True)
    demo = Demo(viewer, config)
    demo.open_slide()
    demo.annotate()
    demo.train()
    demo.analyze()
    demo.export()
    return demo.write_summary()
