"""A run folder belongs to one run: a new run never silently keeps (or mixes with) an earlier one."""

from __future__ import annotations

import pytest

from pixelbert.config import ConfigError
from pixelbert.recipes.rundir import LOCK_NAME, claim_output_dir


def _earlier_run(folder):
    (folder / "checkpoints" / "step_00000010").mkdir(parents=True)
    (folder / "export").mkdir()
    (folder / "export" / "model.safetensors").write_bytes(b"old")
    (folder / "config.json").write_text("{}")
    (folder / "notes.txt").write_text("the user's own file")


def test_a_new_run_into_a_folder_holding_a_run_is_refused_and_nothing_is_touched(tmp_path):
    _earlier_run(tmp_path)
    with pytest.raises(ConfigError, match="already holds a run; resume it"):
        claim_output_dir(tmp_path, resume=None, check_only=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        with claim_output_dir(tmp_path, resume=None):
            pass
    assert (tmp_path / "export" / "model.safetensors").read_bytes() == b"old"
    assert (tmp_path / "checkpoints" / "step_00000010").is_dir()


@pytest.mark.parametrize("resume", ["auto", "some/checkpoint"])
def test_resuming_into_a_folder_holding_a_run_is_allowed(tmp_path, resume):
    _earlier_run(tmp_path)
    claim_output_dir(tmp_path, resume=resume, check_only=True)
    with claim_output_dir(tmp_path, resume=resume):
        assert (tmp_path / "checkpoints").is_dir()  # nothing removed


def test_overwrite_removes_the_earlier_run_outputs_only(tmp_path):
    _earlier_run(tmp_path)
    claim_output_dir(tmp_path, resume=None, overwrite=True, check_only=True)
    assert (tmp_path / "export").is_dir()  # the cheap check removes nothing
    with claim_output_dir(tmp_path, resume=None, overwrite=True):
        assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "export").exists()
        assert not (tmp_path / "config.json").exists()
    assert (tmp_path / "notes.txt").read_text() == "the user's own file"


def test_an_empty_or_new_folder_is_taken(tmp_path):
    claim_output_dir(tmp_path / "new", resume=None, check_only=True)
    with claim_output_dir(tmp_path / "new", resume=None):
        assert (tmp_path / "new" / LOCK_NAME).is_file()


def test_a_second_run_into_a_folder_in_use_is_refused_while_the_first_holds_it(tmp_path):
    with claim_output_dir(tmp_path, resume=None):
        with pytest.raises(ConfigError, match="is in use by another run"):
            with claim_output_dir(tmp_path, resume="auto"):
                pass
    with claim_output_dir(tmp_path, resume="auto"):  # released at the end of the first run
        pass


def test_an_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        claim_output_dir(tmp_path / "f", resume=None, check_only=True)
