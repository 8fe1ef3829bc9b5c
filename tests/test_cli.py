import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tomllib

from mgnn.cli import load_config, main
from mgnn.runs import load_checkpoint, load_network
from mgnn.runs.config import DEFAULTS, METHOD_DEFAULTS

SMALL = ["--set", "data.n_train=200", "--set", "data.n_val=20", "--set", "net.width=4",
         "--set", "net.depth=4"]


def test_version(capsys):
    import mgnn

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mgnn {mgnn.__version__}"


def test_info_reports_blas_numba_mpi_gpu(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "mgnn" in out and "MPI" in out and "GPU" in out
    blas = [line for line in out.splitlines() if line.startswith("BLAS:")]
    assert blas and all("threads" in line for line in blas)
    assert "Numba:" in out and "threads" in out.split("Numba:")[1].splitlines()[0]


def test_config_defaults_prints_every_key(capsys):
    assert main(["config", "--defaults"]) == 0
    out = capsys.readouterr().out
    assert tomllib.loads(out) == DEFAULTS
    for method in METHOD_DEFAULTS:  # the method-specific option defaults are listed
        assert f"#   {method}: " in out


def test_config_shows_method_specific_defaults(capsys):
    assert main(["config", "--set", "optimizer.method=lbfgs"]) == 0
    cfg = tomllib.loads(capsys.readouterr().out)
    assert cfg["optimizer"] == {"method": "lbfgs", "options": METHOD_DEFAULTS["lbfgs"]}


def test_readme_example_lbfgs_trains(tmp_path):
    """``--set optimizer.method=lbfgs`` used to fail on Adam's defaults (lr, batch_size)."""
    out = tmp_path / "res.json"
    assert main(["train", *SMALL, "--set", "optimizer.method=lbfgs",
                 "--set", "optimizer.options.maxiter=3", "--json", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert res["config"]["optimizer"]["options"] == {"maxiter": 3}
    assert res["nit"] == 3


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


def one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mgnn: error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv,match", [
    (["train", "--set", "net.widht=3"], "unknown setting 'net.widht'"),
    (["train", "--set", "net.width"], "--set needs section.key=value"),
    (["train", "--set", "solver.name=newton"], "unknown solver.name 'newton'"),
    (["train", "--set", "propagation.kind=gpu"], "unknown propagation.kind 'gpu'"),
    (["train", "--set", "net.depth=0"], "depth must be >= 1"),
    (["train", "--config", "/nonexistent/run.toml"], "No such file"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--set", "checkpoint.every=5"], "checkpoint.every/checkpoint.seconds need --out"),
    (["train", "--set", "checkpoint.every=-1", "--out", "{tmp}/o"], "checkpoint.every must be"),
    (["train", "--out", "{tmp}/file.txt"], "exists and is not a folder"),
    (["train", "--json", "{tmp}/no/such/dir/r.json"], "does not exist"),
    (["train", "--resume", "{tmp}/nothing"], "no checkpoint file or folder"),
    (["train", "--set", "solver.name=rmtr", "--set", "propagation.kind=layer_parallel"],
     "layer_parallel' runs with solver.name='minimize' only"),
    (["config", "--defaults", "--set", "net.width=2"], "--defaults takes no --config"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_errors_are_one_line_with_status_2(capsys, tmp_path, monkeypatch, argv, match):
    (tmp_path / "file.txt").write_text("x")
    import mgnn.runs.train as train

    def no_training(*a, **k):  # path checks happen before any training
        raise AssertionError("trained despite a bad command line")

    monkeypatch.setattr(train, "run_solver", no_training)
    err = one_line_error(capsys, [a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert match in err


def test_unknown_option_is_one_line(capsys):
    err = one_line_error(capsys, ["train", *SMALL, "--set", "optimizer.options.lrr=0.1"])
    assert "unknown option 'lrr' for method 'adam'" in err


def test_unknown_settings_are_errors():
    with pytest.raises(ValueError, match="unknown setting 'net.widht'"):
        load_config(overrides=["net.widht=3"])
    with pytest.raises(ValueError, match="--set needs section.key=value"):
        load_config(overrides=["net.width"])


def test_out_dir_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *SMALL, "--set", "optimizer.options.maxiter=12",
            "--set", "optimizer.options.batch_size=20", "--set", "checkpoint.every=4",
            "--set", "progress.every=4", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    for name in ("config.toml", "summary.json", "history.json", "history.csv", "network.npz",
                 "loss.png", "work.png", "accuracy.png"):
        assert (out / name).stat().st_size > 0, name
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert cfg["optimizer"]["options"]["maxiter"] == 12
    hist = json.loads((out / "history.json").read_text())
    csv_rows = (out / "history.csv").read_text().splitlines()
    assert len(csv_rows) == len(hist["fun"]) + 1 == 13 and csv_rows[0].startswith("fun,")
    summary = json.loads((out / "summary.json").read_text())
    net, theta = load_network(out / "network.npz")
    assert net.width == 4 and theta.shape == (net.n_params,)
    assert sorted(os.listdir(out / "checkpoints")) == [f"ckpt-{k:09d}.npz" for k in (4, 8, 12)]
    # resume from iteration 8 (the configuration comes from the checkpoint): same end
    os.remove(out / "checkpoints" / "ckpt-000000012.npz")
    out2 = tmp_path / "resumed"
    assert main(["train", "--resume", str(out / "checkpoints"), "--out", str(out2),
                 "--quiet"]) == 0
    again = json.loads((out2 / "summary.json").read_text())
    assert again["fun"] == summary["fun"] and again["nit"] == 12
    _, theta2 = load_network(out2 / "network.npz")
    assert np.array_equal(theta2, theta)


@pytest.mark.parametrize("solver,extra", [
    ("nested_iteration", ["--set", "nested_iteration.schedule=[4,3,2]"]),
    ("rmtr", ["--set", "rmtr.options.maxiter=2"]),
    ("mgopt", ["--set", "mgopt.cycles=2"]),
    ("apts", ["--set", "dd.options.maxiter=2", "--set", "dd.two_level=true"]),
    ("spqn", ["--set", "dd.options.maxiter=2", "--set", "dd.decomposition=data",
              "--set", "dd.overlap=0.1", "--set", "dd.two_level=true"]),
])
def test_multilevel_solvers(tmp_path, solver, extra):
    out = tmp_path / "o"
    argv = ["train", "--set", "data.n_train=200", "--set", "data.n_val=20",
            "--set", "net.width=4", "--set", "net.depth=8", "--set", f"solver.name={solver}",
            *extra, "--out", str(out), "--quiet"]
    assert main(argv) == 0
    saved = load_network(out / "network.npz")
    assert saved.hierarchy is not None and saved.hierarchy.n_levels == 3
    assert json.loads((out / "summary.json").read_text())["nit"] > 0


def test_mgrit_propagation(tmp_path):
    out = tmp_path / "r.json"
    assert main(["train", *SMALL[:4], "--set", "net.depth=8", "--set", "net.width=4",
                 "--set", "propagation.kind=mgrit", "--set", "propagation.cf=2",
                 "--set", "optimizer.options.maxiter=3", "--json", str(out), "--quiet"]) == 0
    hist = json.loads(out.read_text())["history"]
    assert "mgrit_fwd_factor" in hist


def test_progress_lines_when_not_a_terminal(capsys):
    assert main(["train", *SMALL, "--set", "optimizer.options.maxiter=6",
                 "--set", "progress.every=3"]) == 0
    out = capsys.readouterr().out
    assert "adam  it 3 " in out and "adam  it 6 " in out and "adam  it 4 " not in out


def test_progress_bar(capsys):
    from mgnn.cli import _Bar

    bar = _Bar(10, True)
    bar.update(4, {"fun": 0.5})
    assert bar.bar.n == 4
    bar.close()
    assert "4/10" in capsys.readouterr().err


def test_sigterm_leaves_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mgnn.cli", "train", *SMALL, "--set",
           "optimizer.options.maxiter=10000000", "--set", "progress.every=50",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait until training runs (handlers installed)
            if line.startswith("adam  it 50 "):
                break
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM.value, stderr
    assert "Interrupted by SIGTERM" in stdout and "SIGTERM received" in stderr
    ck = load_checkpoint(out / "checkpoints")
    assert ck.solver == "adam" and ck.nit >= 50
    assert ck.meta["metadata"]["config"]["optimizer"]["options"]["maxiter"] == 10000000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == 4 and summary["nit"] == ck.nit
    assert load_network(out / "network.npz").theta.shape == (ck.state["method"]["x"].size,)


def test_console_script_entry_point():
    res = subprocess.run([sys.executable, "-m", "mgnn.cli", "info"], capture_output=True,
                         text=True, check=True)
    assert "numba" in res.stdout


def test_lsgd_from_the_command_line(tmp_path):
    out = tmp_path / "r.json"
    assert main(["train", "--set", "data.problem=smooth_regression", "--set", "data.n_train=200",
                 "--set", "net.activation=relu", "--set", "net.init=box",
                 "--set", "optimizer.method=lsgd", "--set", "optimizer.options.maxiter=4",
                 "--json", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert res["nit"] == 4 and "ls_rank" in res["history"]
