import json
import subprocess
import sys

import pytest

from mgnn.cli import load_config, main


def test_info_runs(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "mgnn" in out and "MPI" in out and "GPU" in out


def test_train_with_toml_and_overrides(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[data]\nn_train = 80\nn_val = 20\n[net]\nwidth = 4\ndepth = 4\n'
                   '[optimizer]\nmethod = "lbfgs"\n[optimizer.options]\nmaxiter = 5\n')
    out = tmp_path / "res.json"
    assert main(["train", "--config", str(cfg), "--set", "net.activation='smooth_relu'",
                 "--json", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert res["config"]["net"]["activation"] == "smooth_relu"
    assert res["config"]["optimizer"]["options"] == {"maxiter": 5}
    assert res["nit"] <= 5 and 0 <= res["val_accuracy"] <= 1
    assert len(res["history"]["fun"]) == res["nit"] + 1


def test_unknown_settings_are_errors():
    with pytest.raises(ValueError, match="unknown setting 'net.widht'"):
        load_config(overrides=["net.widht=3"])
    with pytest.raises(ValueError, match="--set needs section.key=value"):
        load_config(overrides=["net.width"])
    with pytest.raises(TypeError, match="unknown option 'lrr'"):
        main(["train", "--set", "optimizer.options.lrr=0.1", "--quiet"])


def test_console_script_entry_point():
    res = subprocess.run([sys.executable, "-m", "mgnn.cli", "info"], capture_output=True,
                         text=True, check=True)
    assert "numba" in res.stdout
