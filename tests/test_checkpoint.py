"""Strict, safe checkpoint loading and atomic saving."""
import argparse
import os
from pathlib import Path

import pytest
import torch

from models import ModelSettings, PointCounter, build_from_checkpoint, save_checkpoint
from models.checkpoint import CheckpointError, read_checkpoint
from helpers import REFERENCE_CHECKPOINT, padded_outputs, random_checkpoint


@pytest.fixture(scope="module")
def upstream_state():
    return torch.load(REFERENCE_CHECKPOINT, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def network_state():
    """A randomly initialised network's state, under the upstream key names: for the loading errors,
    which do not depend on upstream's numbers (and so run without the reference fixtures)."""
    torch.manual_seed(0)
    return PointCounter().state_dict()


def quiet(message):
    pass


@pytest.mark.reference_fixtures
def test_float16_upstream_checkpoint_loads_as_float32_and_drops_dead_keys(upstream_state):
    lines = []
    model, settings, _ = build_from_checkpoint(REFERENCE_CHECKPOINT, log=lines.append)
    assert settings == ModelSettings()
    assert len(lines) == 1 and "dropped 14" in lines[0] and "fpn.P5_2" in lines[0]
    state = model.state_dict()
    assert state["fpn.P4_2.weight"].dtype == torch.float32
    torch.testing.assert_close(state["fpn.P4_2.weight"], upstream_state["fpn.P4_2.weight"].float(), rtol=0, atol=0)
    assert not any(key.startswith(("fpn.P5_2", "fpn.P3", "regression.conv3")) for key in state)


def save_state(tmp_path, state, name="ckpt.pth", **extra):
    path = tmp_path / name
    torch.save({"model": state, **extra}, path)
    return path


def test_missing_key_is_named(tmp_path, network_state):
    state = dict(network_state)
    del state["fpn.P4_2.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: \['fpn.P4_2.weight'\]"):
        build_from_checkpoint(save_state(tmp_path, state), log=quiet)


def test_wrong_shape_is_named_with_both_shapes(tmp_path, network_state):
    state = dict(network_state)
    state["regression.conv1.weight"] = torch.zeros(256, 256, 1, 1)
    with pytest.raises(CheckpointError, match=r"regression.conv1.weight \(256, 256, 1, 1\) != \(256, 256, 3, 3\)"):
        build_from_checkpoint(save_state(tmp_path, state), log=quiet)


def test_unknown_key_is_named(tmp_path, network_state):
    state = dict(network_state)
    state["fpn.P6.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected keys: \['fpn.P6.weight'\]"):
        build_from_checkpoint(save_state(tmp_path, state), log=quiet)


class Payload:
    """Unpickling this would create a file: proof that something in the checkpoint ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_object_is_refused_and_never_runs(tmp_path, network_state):
    marker = tmp_path / "code_ran"
    path = save_state(tmp_path, dict(network_state), payload=Payload(str(marker)))
    with pytest.raises(CheckpointError, match="refused to load.*pickled Python objects"):
        build_from_checkpoint(path, log=quiet)
    assert not marker.exists()
    assert str(path) in str(pytest.raises(CheckpointError, read_checkpoint, path).value)


def test_argparse_namespace_in_checkpoint_is_accepted(tmp_path, network_state):
    path = save_state(tmp_path, dict(network_state), args=argparse.Namespace(lr=1e-4))
    model, _, content = build_from_checkpoint(path, log=quiet)
    assert content["args"].lr == 1e-4


def test_missing_file_and_non_checkpoint_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_checkpoint(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        read_checkpoint(junk)


def test_p2pnet_style_checkpoint_with_imagenet_normalisation_matches_normalise_then_pad(tmp_path):
    """Original P2PNet normalises with ImageNet mean/std and then zero-pads; a DDP-saved state dict
    carries a ``module.`` prefix."""
    torch.manual_seed(1)
    plain = PointCounter(ModelSettings()).eval()
    state = {f"module.{key}": value.half() for key, value in plain.state_dict().items()}
    state["module.fpn.P3_1.weight"] = torch.zeros(256, 256, 1, 1)
    path = save_state(tmp_path, state)
    model, settings, _ = build_from_checkpoint(path, input_norm="imagenet", log=quiet)
    assert settings.input_norm == "imagenet"
    image = torch.rand(3, 50, 70)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    upstream_input = torch.zeros(1, 3, 128, 128)
    upstream_input[0, :, :50, :70] = (image - mean) / std
    plain.load_state_dict({key[len("module."):]: value.float() for key, value in state.items()
                           if "P3_1" not in key})
    with torch.no_grad():
        expected = plain(upstream_input)
    actual = padded_outputs(model, image)
    torch.testing.assert_close(actual["pred_logits"], expected["pred_logits"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actual["pred_points"], expected["pred_points"][0], rtol=1e-5, atol=1e-4)


def test_own_checkpoint_round_trip_restores_settings(tmp_path):
    settings = ModelSettings(row=3, line=3, input_norm="imagenet")
    original = random_checkpoint(tmp_path / "model.pth", settings)
    model, loaded_settings, content = build_from_checkpoint(tmp_path / "model.pth", log=quiet)
    assert loaded_settings == settings and content["format"] == "dehaze-p2pnet"
    for key, value in original.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


@pytest.mark.parametrize("failure,expected,message", [
    (KeyboardInterrupt(), KeyboardInterrupt, None),
    # A full disk, as torch.save reports it.
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 189218816 vs 189218704"), CheckpointError,
     r"could not write .*latest.pth \(\[enforce fail.*MB are free on its disk, which may be full; any earlier "
     r"latest.pth is unchanged"),
])
def test_a_save_that_fails_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure, expected, message):
    path = tmp_path / "latest.pth"
    random_checkpoint(path)
    before = path.read_bytes()

    def crash_midway(obj, file, *args, **kwargs):
        file.write(b"partial")
        raise failure

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(expected, match=message):
        save_checkpoint(path, PointCounter(), ModelSettings())
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["latest.pth"]


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_save(tmp_path):
    (tmp_path / ".latest.pth.x1y2.tmp").write_bytes(b"left by a writer killed with SIGKILL")
    (tmp_path / ".best_mae.pth.x1y2.tmp").write_bytes(b"another file's temporary, not touched")
    random_checkpoint(tmp_path / "latest.pth")
    assert sorted(os.listdir(tmp_path)) == [".best_mae.pth.x1y2.tmp", "latest.pth"]
