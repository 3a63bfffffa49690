"""The zoo names every nuclei model once; loaders, lists and timm's tag all read it."""

from __future__ import annotations

import pytest

from napari_rckd import zoo
from napari_rckd.errors import RckdError


def test_every_network_entry_matches_its_shipped_weights():
    from napari_rckd.models.shipped import shipped_weights
    from napari_rckd.models.weights import read_weights

    networks = [m for m in zoo.models() if m.kind == zoo.NETWORK]
    assert {m.name for m in networks} == {"builtin", "learned", "csat"}
    for model in networks:
        _, metadata = read_weights(shipped_weights(model.name))
        assert metadata["config"]["input_mpp"] == model.mpp, model.name
        assert model.licence == zoo.NON_COMMERCIAL
        assert "non-commercial" in metadata["provenance"]["licence"]


def test_get_teacher_builds_each_entry_as_registered():
    from napari_rckd.teachers import get_teacher
    from napari_rckd.teachers.network import NetworkTeacher

    for model in zoo.models():
        if model.kind == zoo.EXTERNAL:
            continue  # needs another package
        teacher = get_teacher(model.name, device="cpu")
        assert teacher.mpp == model.mpp and teacher.name == model.name
        assert isinstance(teacher, NetworkTeacher) == (model.kind == zoo.NETWORK)
        assert (getattr(teacher, "prior", None) is not None) == model.classical_prior
    hybrid = get_teacher("Hybrid", device="cpu")  # an alias, any case, keeps its own name
    assert hybrid.name == "hybrid" and hybrid.prior is not None


def test_lists_and_choices_read_the_zoo():
    from napari_rckd._widgets.choices import NUCLEI_MODELS
    from napari_rckd.commands.checks import NAMED_MODELS
    from napari_rckd.commands.evaluate import DEFAULT_TEACHERS
    from napari_rckd.inference.nuclei_choice import choose_nuclei
    from napari_rckd.training.initial import default_init

    assert [spec for _, spec in NUCLEI_MODELS[1:]] == [m.name for m in zoo.models() if m.menu]
    assert set(zoo.names()) <= NAMED_MODELS
    assert DEFAULT_TEACHERS == ("builtin", "learned", "csat", "classical", "otsu")
    assert choose_nuclei("auto", "cpu")[0] == zoo.for_device("cpu").name == "builtin"
    assert zoo.for_device("cuda").name == default_init(None) == "csat"


def test_timm_pretrained_tag_points_at_the_zoo_file():
    import timm

    import napari_rckd.models  # noqa: F401  (registers rckd_csat)
    from napari_rckd.models.shipped import weights_path

    cfg = timm.models.get_pretrained_cfg("rckd_csat.rckd_stage1")
    assert (
        cfg.file == str(weights_path("csat", stage2=True))
        and cfg.license == zoo.get("csat").licence
    )


def test_names_are_registered_once_and_unknown_ones_are_one_sentence():
    with pytest.raises(ValueError, match="registered twice"):
        zoo.register(zoo.NucleiModel("csat", "again", zoo.NETWORK, mpp=0.5))
    with pytest.raises(RckdError, match="no nuclei model is called 'nope'; use one of builtin"):
        zoo.get("nope")
    from napari_rckd.models.shipped import weights_path

    with pytest.raises(RckdError, match="no shipped nuclei model is called 'classical'"):
        weights_path("classical")
    with pytest.raises(
        RckdError, match="no shipped stage-2 start is called 'learned'; use one of csat"
    ):
        weights_path("learned", stage2=True)
