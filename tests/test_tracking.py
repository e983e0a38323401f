"""``--report-to`` (issue 31, item 7): the trackers accelerate takes, and a tracker whose package is
missing refused in one line before training (accelerate would drop it and the run log nothing)."""

import pytest

import accelerate.utils

from hypernoise.cli.main import main
from hypernoise.errors import ConfigError, MissingPackageError
from hypernoise.tracking import check_report_to, tracker_names


@pytest.fixture
def nothing_installed(monkeypatch):
    for name in tracker_names():
        monkeypatch.setattr(accelerate.utils, f"is_{name}_available", lambda: False, raising=False)


@pytest.mark.parametrize("tracker, install", [("tensorboard", 'pip install "hypernoise[tracking]"'),
                                              ("wandb", "pip install wandb"), ("comet_ml", "pip install comet-ml"),
                                              ("all", 'pip install "hypernoise[tracking]"')])
def test_a_tracker_that_is_not_installed_is_one_line_before_training(tracker, install, nothing_installed, tmp_path,
                                                                      capsys):
    out = tmp_path / "run"
    assert main(["train", "--generator", "toy2d", "--steps", "2", "--report-to", tracker, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and install in err and "--report-to" in err, err
    assert not out.exists()  # nothing was trained or written


def test_the_names_are_accelerates_and_an_installed_one_is_taken(nothing_installed, monkeypatch):
    assert {"all", "tensorboard", "wandb", "comet_ml", "mlflow", "aim", "clearml", "dvclive"} <= set(tracker_names())
    monkeypatch.setattr(accelerate.utils, "is_mlflow_available", lambda: True)
    assert check_report_to("mlflow") == "mlflow" and check_report_to("all") == "all"
    assert check_report_to(None) is None and check_report_to("none") is None
    with pytest.raises(MissingPackageError):
        check_report_to("wandb")
    with pytest.raises(ConfigError, match="tensorboard"):
        check_report_to("tensorbord")
