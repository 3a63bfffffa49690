"""Teachers: the output contract, identities, resampling, bad specs, and real-data quality."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.teachers import ClassicalTeacher, OtsuTeacher, Teacher, get_teacher
from napari_rckd.teachers.evaluation import evaluate_teacher, find_ground_truth, read_rgb


@pytest.fixture(scope="module")
def cpm_tile() -> np.ndarray:
    """A real 20x (0.5 µm/px) H&E crop with ground truth nuclei."""
    return read_rgb(shared_path("nuclei/cpm15/image02.png"))[:256, :320]


@pytest.mark.parametrize(
    "spec", ["builtin", "learned", "csat", "csat+classical", "classical", "otsu"]
)
def test_output_contract(spec, cpm_tile):
    teacher = get_teacher(spec)
    assert isinstance(teacher, Teacher)
    output = teacher.predict(cpm_tile, 0.5)
    assert output.prob.shape == output.labels.shape == cpm_tile.shape[:2]
    assert output.prob.dtype == np.float32 and output.labels.dtype == np.int32
    assert output.prob.min() >= 0 and output.prob.max() <= 1
    assert output.labels.min() == 0 and output.labels.max() >= 20  # dozens of nuclei
    # the probability is soft and agrees with the instances
    assert len(np.unique(np.round(output.prob, 2))) > 20
    assert output.prob[output.labels > 0].mean() > 0.5 > output.prob[output.labels == 0].mean()


def test_classical_probability_is_consistent_with_labels(cpm_tile):
    output = ClassicalTeacher().predict(cpm_tile, 0.5)
    np.testing.assert_array_equal(output.prob > 0.5, output.labels > 0)


def test_identity_is_stable_and_follows_parameters():
    assert get_teacher("classical").identity == ClassicalTeacher().identity
    assert get_teacher("classical").identity != ClassicalTeacher(block_um=30).identity
    assert get_teacher("classical", mpp=0.25).identity != get_teacher("classical").identity
    assert get_teacher("learned").use_boundary  # the learned teacher separates by contours


def test_builtin_is_the_learned_teacher_averaged_with_the_classical_detector(cpm_tile):
    from napari_rckd.teachers.instances import instances_from_probability

    builtin, learned = get_teacher("builtin"), get_teacher("learned")
    assert builtin.name == "builtin" and builtin.mpp == learned.mpp == 0.25
    assert builtin.identity.startswith("builtin:") and builtin.identity.endswith(
        "+" + ClassicalTeacher(mpp=0.25).identity
    )
    assert get_teacher("hybrid").identity.replace("hybrid:", "builtin:") == builtin.identity
    assert get_teacher("csat+classical").identity != get_teacher("csat").identity
    tile = cpm_tile[:128, :160]
    alone = learned._predict_native(tile).prob
    prior = ClassicalTeacher(mpp=0.25)._predict_native(tile).prob
    blended = builtin._predict_native(tile)
    np.testing.assert_allclose(blended.prob, (alone + prior) / 2, atol=1e-6)
    contours = 1 / (1 + np.exp(-learned.logits(tile)[1]))
    np.testing.assert_array_equal(
        blended.labels, instances_from_probability(blended.prob, 0.25, contours)
    )


def test_missing_shipped_weights_name_the_file_and_the_fix(monkeypatch, tmp_path):
    from napari_rckd.models import shipped

    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    with pytest.raises(RckdError, match=r"nuclei-teacher.safetensors are missing.*reinstall"):
        get_teacher("learned")


def test_shipped_teacher_stays_above_its_floor_on_cryonuseg():
    """Regression guard: with the network trained without CryoNuSeg (2 images, the shipped
    2,400-step recipe, seed 0), `builtin` scored Dice 0.489 and AJI 0.310 there
    (docs/teachers.md). The floor is that held-out score less 0.045 Dice and 0.055 AJI: a broken
    weight file or instance rule falls far below it, seed noise does not."""
    images = find_ground_truth(shared_path("nuclei/cryonuseg"))
    (row,) = evaluate_teacher(get_teacher("builtin"), images)
    assert row["dice"] > 0.444 and row["aji"] > 0.255


def test_shipped_student_stays_above_its_floor_on_cpm15():
    """Regression guard from the held-out pair of docs/teachers.md: the student of a teacher
    (with its classical half) that never saw CPM-15, distilled without its images under the
    stain jitter, copying its nuclei, scored Dice 0.778 and AJI 0.544 there. The shipped `csat`
    saw CPM-15, so it must at least stay above the held-out student less 0.03 of each: a broken weight file, resampling or instance rule
    falls far below, seed noise does not."""
    images = find_ground_truth(shared_path("nuclei/cpm15"))
    (row,) = evaluate_teacher(get_teacher("csat"), images)
    assert row["dice"] > 0.748 and row["aji"] > 0.514


def test_resamples_when_the_tile_is_at_another_mpp(cpm_tile):
    """A 40x tile is processed at the teacher's 0.5 µm/px and returned at 40x size."""
    from skimage.transform import resize

    teacher = ClassicalTeacher()
    big = np.round(resize(cpm_tile, (512, 640), order=1, preserve_range=True)).astype(np.uint8)
    at_40x = teacher.predict(big, 0.25)
    at_20x = teacher.predict(cpm_tile, 0.5)
    assert at_40x.prob.shape == at_40x.labels.shape == (512, 640)
    # same tissue, same answer up to resampling: foregrounds agree and nuclei counts are close
    down = at_40x.labels[::2, ::2] > 0
    agreement = (down == (at_20x.labels > 0)).mean()
    assert agreement > 0.95
    assert abs(int(at_40x.labels.max()) - int(at_20x.labels.max())) <= 0.15 * at_20x.labels.max()


@pytest.mark.parametrize("shape", [(512, 640), (511, 509), (100, 90), (40, 300), (8, 8)])
def test_resizing_a_tile_gives_skimages_pixels(cpm_tile, shape):
    """One channel at a time is only faster: up, down, both at once and anti-aliased alike."""
    from skimage.transform import resize

    from napari_rckd.teachers.base import resize_image

    tile = cpm_tile[:200, :230]
    shrinking = shape[0] < tile.shape[0]
    expected = resize(tile, shape, order=1, preserve_range=True, anti_aliasing=shrinking)
    expected = np.clip(np.rint(expected), 0, 255).astype(np.uint8)
    assert np.array_equal(resize_image(tile, shape), expected)


@pytest.mark.parametrize(
    ("tile", "mpp", "message"),
    [
        (np.zeros((32, 32, 4), np.uint8), 0.5, "RGB uint8"),
        (np.zeros((32, 32, 3), np.float32), 0.5, "RGB uint8"),
        (np.zeros((4, 32, 3), np.uint8), 0.5, "too small"),
        (np.zeros((32, 32, 3), np.uint8), 0.0, "mpp"),
    ],
)
def test_bad_tiles_are_clear_errors(tile, mpp, message):
    with pytest.raises(RckdError, match=message):
        ClassicalTeacher().predict(tile, mpp)


def test_blank_tile_gives_no_nuclei():
    for teacher in (ClassicalTeacher(), OtsuTeacher()):
        output = teacher.predict(np.full((64, 64, 3), 240, np.uint8), 0.5)
        assert output.labels.max() == 0 and output.prob.max() <= 0.5


def test_bad_specs_are_clear_errors(tmp_path):
    with pytest.raises(RckdError, match="unknown teacher 'stardist'"):
        get_teacher("stardist")
    weird = tmp_path / "model.onnx"
    weird.write_bytes(b"\0")
    with pytest.raises(RckdError, match="unknown type '.onnx'"):
        get_teacher(weird)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    with pytest.raises(RckdError, match="not a TorchScript model"):
        get_teacher(broken)
    with pytest.raises(RckdError, match="only a network teacher.*use 'otsu' or classical"):
        get_teacher("otsu+classical")


@pytest.mark.parametrize(
    ("spec", "package"), [("cellpose", "cellpose"), ("instanseg", "instanseg")]
)
def test_missing_external_packages_say_what_to_install(spec, package):
    import importlib.util

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(RckdError, match="pip install"):
        get_teacher(spec)


@pytest.fixture(scope="module")
def ground_truth():
    return find_ground_truth(shared_path("nuclei"))


def test_ground_truth_sources_and_resolutions(ground_truth):
    sources = {item.source for item in ground_truth}
    assert sources == {"cpm15", "cryonuseg", "monuseg-train"}  # pannuke has no instances
    mpps = {item.image_path.name: item.mpp for item in ground_truth}
    assert mpps["image01.png"] == 0.5 and mpps["image08.png"] == 0.25
    assert mpps["TCGA-21-5784-01Z-00-DX1.tif"] == pytest.approx(0.2527)


def test_classical_splits_nuclei_better_than_otsu_on_every_source(ground_truth):
    """What holds on the enlarged shared data: the classical detector's watershed beats Otsu's
    connected components on the instance metrics (AJI, PQ) everywhere, while its pixel Dice
    does not beat a plain Otsu threshold on MoNuSeg (0.72 vs 0.73), so Dice is not asserted."""
    classical = {row["source"]: row for row in evaluate_teacher(ClassicalTeacher(), ground_truth)}
    otsu = {row["source"]: row for row in evaluate_teacher(OtsuTeacher(), ground_truth)}
    assert classical.keys() == otsu.keys() == {"cpm15", "cryonuseg", "monuseg-train"}
    for source in classical:
        for metric in ("aji", "pq"):
            assert classical[source][metric] > otsu[source][metric], (source, metric)
    assert classical["cpm15"]["dice"] > 0.75 and classical["cpm15"]["aji"] > 0.5


def test_network_teachers_accept_the_auto_device():
    """Analyze slide passes its device choice "auto" through (it once crashed the widget)."""
    assert get_teacher("csat", device="auto").device in ("cpu", "cuda", "mps")
