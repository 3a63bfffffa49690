"""Bands of tiles: a slide cut into bands (one task each) and merged has the results of the
one-task run, nuclei cut by a band border included: same instances, same ids, same pixels,
same files. On a 2-process LocalCluster a cohort of one slide is cut into bands."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_rckd.inference import bands
from napari_rckd.inference.cohort_slide import CohortSettings, predict_slide
from napari_rckd.inference.wholeslide import open_results
from test_cohort import worker_killer
from test_predict import checkpoints  # noqa: F401  (fixtures)

pytest.importorskip("distributed")

SIZE = 2048  # 8 × 8 nuclei tiles of 256 px at 0.5 µm/px


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    from napari_rckd.io.synthetic import make_synthetic_slide

    path = tmp_path_factory.mktemp("bands") / "s.ome.tif"
    make_synthetic_slide(path, size=SIZE, seed=3)
    return path


@pytest.fixture(scope="module")
def unsplit(slide_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("unsplit")
    row = predict_slide(slide_path, CohortSettings(dict(nuclei="classical"), str(out)))
    return out, row


def _assert_same_results(out, reference, results=("nuclei_labels", "nuclei_prob")) -> None:
    """Every level of every result, and every file, equal to the reference run's. Labels,
    classes and masks are equal exactly; a tile classifier's probabilities to float32 rounding,
    since a band batches its tiles otherwise and BLAS sums a batch in its own order."""
    mine, theirs = open_results(out / "s.ome.zarr"), open_results(reference / "s.ome.zarr")
    assert sorted(mine) == sorted(theirs) == sorted(results)
    for name, store in theirs.items():
        for level, array in enumerate(store.levels):
            got = np.asarray(mine[name].levels[level][...])
            if name in ("subtype_prob", "region_prob"):
                np.testing.assert_allclose(got, array[...], rtol=0, atol=1e-6)
            else:
                np.testing.assert_array_equal(got, array[...])

    def slide_files(folder):  # not the cohort table and page of a cohort run
        return sorted(
            p.name for p in folder.iterdir() if p.name.startswith("s.ome.") and p.is_file()
        )

    files = slide_files(reference)
    assert {"s.ome.nuclei.csv", "s.ome.nuclei.geojson"} <= set(files)
    assert files == slide_files(out)
    for name in files:
        if name.endswith(".ome.tif"):  # pixels: its OME-XML names a fresh UUID every time
            np.testing.assert_array_equal(
                tifffile.imread(out / name), tifffile.imread(reference / name)
            )
        else:
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.parametrize("replay_rows", [bands.REPLAY_ROWS, 0])
def test_a_band_split_slide_equals_the_unsplit_run(
    slide_path, unsplit, tmp_path, monkeypatch, replay_rows
):
    """Kept rows replayed then the band copied, or (none kept) the band predicted again by the
    merge: both give the unsplit run's results."""
    monkeypatch.setattr(bands, "REPLAY_ROWS", replay_rows)
    reference, reference_row = unsplit
    settings = CohortSettings(dict(nuclei="classical"), str(tmp_path))
    row = bands.predict_in_bands(slide_path, settings, 3)
    assert row["status"] == "done", row
    assert row["bands"] == 3 and reference_row["bands"] == 1
    for key in ("nuclei", "tiles", "tissue_mm2", "nuclear_area_mean_um2", "damaged_tiles"):
        assert row[key] == reference_row[key], key
    _assert_same_results(tmp_path, reference)
    assert not bands.bands_folder(tmp_path, "s.ome").exists()  # the bands are gone

    labels = open_results(tmp_path / "s.ome.zarr")["nuclei_labels"]
    pixels = labels.read((0, 0, *labels.shape))
    tile = labels.tile
    for border in (2 * tile, 5 * tile):  # tile rows 0-1 | 2-4 | 5-7: nuclei on each border
        above, below = set(np.unique(pixels[border - 1])), set(np.unique(pixels[border]))
        assert len((above & below) - {0}) >= 3, border


def test_subtype_and_region_bands_equal_the_unsplit_run(
    slide_path,
    tmp_path,
    checkpoints,  # noqa: F811
):
    models = dict(nuclei="classical", subtype=checkpoints["subtype"], region=checkpoints["region"])
    reference, out = tmp_path / "unsplit", tmp_path / "bands"
    exports = ("geojson", "csv", "ome-tiff")
    expected = predict_slide(slide_path, CohortSettings(models, str(reference), exports=exports))
    row = bands.predict_in_bands(slide_path, CohortSettings(models, str(out), exports=exports), 3)
    assert row["status"] == "done" and row["bands"] == 3, row
    fractions = [key for key in expected if key.startswith(("subtype_", "region_"))]
    assert fractions and all(row[key] == expected[key] for key in fractions)
    results = ("nuclei_labels", "nuclei_prob", "subtype_class", "subtype_prob")
    _assert_same_results(out, reference, (*results, "region_mask", "region_prob"))


def test_bands_planned_for_few_slides_only():
    from napari_rckd.inference.cohort import bands_wanted

    assert bands_wanted(slides=1, workers=2) == 6
    assert bands_wanted(slides=4, workers=2) == 2
    assert bands_wanted(slides=500, workers=16) == 1
    assert bands_wanted(slides=2, workers=1) == 1  # one worker: nothing to balance


def test_usable_bands_keep_rows_per_band(slide_path):
    from napari_rckd.inference.analysis import build_sources
    from napari_rckd.inference.predictor import Predictor
    from napari_rckd.io import open_slide

    sources = [s.for_whole_slide() for s in build_sources(nuclei="classical")]
    with open_slide(slide_path) as slide, Predictor(slide, sources) as predictor:
        assert bands.usable_bands(predictor, 6) == 2  # 8 tile rows, at least 4 a band
        assert bands.usable_bands(predictor, 1) == 1
        rows = bands.band_rows(predictor, 3)
    assert [band["nuclei"] for band in rows] == [range(0, 2), range(2, 5), range(5, 8)]


def test_one_slide_on_a_local_cluster_is_cut_into_bands(slide_path, unsplit, tmp_path):
    from napari_rckd.inference.clusters import open_client
    from napari_rckd.inference.cohort import plan_cohort, run_cohort
    from napari_rckd.inference.cohort_slide import describe_models

    settings = CohortSettings(dict(nuclei="classical"), str(tmp_path))
    plan = plan_cohort([slide_path], settings, describe_models(settings))
    heard = []
    with open_client("local:2") as client:
        [row] = run_cohort(plan, client, on_tiles=heard.append)
    assert row["status"] == "done", row
    assert row["bands"] == 2 and row["worker"].startswith("tcp://")
    assert 0 < sum(heard) <= row["tiles"]  # the bands' tiles reach the progress bar
    _assert_same_results(tmp_path, unsplit[0])
    assert not list(tmp_path.glob(".*staging"))


def test_a_worker_killed_mid_band_changes_no_result(slide_path, unsplit, tmp_path):
    """Dask runs the band of a worker killed with os._exit again elsewhere; the merged slide
    still equals the unsplit run."""
    from napari_rckd.inference.clusters import open_client
    from napari_rckd.inference.cohort import plan_cohort, run_cohort
    from napari_rckd.inference.cohort_slide import describe_models

    settings = CohortSettings(dict(nuclei="classical"), str(tmp_path))
    plan = plan_cohort([slide_path], settings, describe_models(settings))
    killed = []
    with open_client("local:2") as client:
        [row] = run_cohort(plan, client, on_tiles=worker_killer(client, killed))
    assert killed, "no worker was busy when the first tiles were heard"
    assert row["status"] == "done" and row["bands"] == 2, row
    _assert_same_results(tmp_path, unsplit[0])
    assert not list(tmp_path.glob(".*staging"))
