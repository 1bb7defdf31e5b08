"""options.py and util/values.py: a bad flag value is argparse's one usage line naming the flag, in either
script, before any work."""
import pytest

import run_test
import train

COUNTING = ["--weight_path", "missing.pth", "--input", "missing/"]
TRAINING = ["--dataset_file", "Demo_Hazy"]


@pytest.mark.parametrize("script,flag,value,message", [
    (run_test, "--max_megapixels", "0", "must be positive, got 0"),
    (run_test, "--frame_stride", "0", "must be at least 1, got 0"),
    (run_test, "--tile_size", "300", "must be 0 (never tile) or a positive multiple of 128 pixels, got 300"),
    (run_test, "--threshold", "2", "expected a value in [0, 1], got 2"),
    (run_test, "--num_workers", "-1", "must be at least 0, got -1"),
    (train, "--eval_freq", "0", "must be at least 1, got 0"),
    (train, "--batch_size", "0", "must be at least 1, got 0"),
    (train, "--crop_size", "100", "must be a positive multiple of 16 (the network's stride), got 100"),
    (train, "--num_workers", "-1", "must be at least 0, got -1"),
    (train, "--epochs", "two", "invalid int value: 'two'"),
    (train, "--row", "0", "must be at least 1, got 0"),
], ids=lambda value: value.__name__ if hasattr(value, "main") else None)
def test_bad_flag_values_are_one_usage_line_naming_the_flag(script, flag, value, message, capsys):
    with pytest.raises(SystemExit) as stop:
        script.main((COUNTING if script is run_test else TRAINING) + [flag, value])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and error.endswith(f"error: argument {flag}: {message}"), error
