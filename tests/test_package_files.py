"""What a package index and the napari hub expect is there: the code's licence, the shipped
weights' terms (shipped with them), a changelog, the hub's description and preview image."""

from __future__ import annotations

import configparser
import fnmatch
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "napari_rckd" / "models" / "shipped"


def test_the_code_licence_matches_setup_cfg():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "Copyright (c) 2026, napari-rckd developers" in text
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["metadata"]["license"] == "BSD-3-Clause"
    assert "LICENSE" in setup["metadata"]["license_files"].split()


def test_the_weights_terms_ship_beside_the_weights_and_name_their_data():
    from napari_rckd.models.weights import read_weights

    terms = SHIPPED / "LICENSE-weights.md"
    text = terms.read_text()
    assert "non-commercial research only" in text
    for weights in sorted(SHIPPED.glob("*.safetensors")):
        assert f"`{weights.name}`" in text, f"{weights.name} is not described"
        _, metadata = read_weights(weights)
        assert metadata["provenance"]["licence"].startswith("non-commercial research only")
    for source in ("MoNuSeg", "CPM-15", "CryoNuSeg", "CRC-VAL-HE-7K", "BRACS", "LC25000"):
        assert source in text
    assert "CC BY-NC-SA 4.0" in text
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    patterns = setup["options.package_data"]["napari_rckd"].split()
    relative = terms.relative_to(ROOT / "src" / "napari_rckd").as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)


def test_changelog_and_napari_hub_files():
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")
    hub = ROOT / ".napari-hub"
    description = (hub / "DESCRIPTION.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", description)
    assert images, "the hub description shows no preview image"
    for image in images:
        assert (hub / image).resolve().is_file(), image
    config = yaml.safe_load((hub / "config.yml").read_text())
    assert config["visibility"] == "public" and config["summary"]
    assert (ROOT / config["preview_image"]).is_file()
    assert (hub / images[0]).resolve() == (ROOT / config["preview_image"]).resolve()
