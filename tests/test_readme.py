"""Every code block of the README runs as written.

The ``python`` blocks run in order in one namespace (like a notebook), in a temporary
folder; the ``toml`` block is the ``run.toml`` the ``console`` block's commands use,
and each ``$ mgnn ...`` line runs through the command line's ``main``. The remaining
blocks are shell set-up commands (``pip install``, ``pytest``), listed here so that a
new block cannot slip through untested. The GPU block (``import cupy``) runs on CuPy
where CUDA is, and elsewhere with ``cupy`` bound to the CPU stand-in
(:mod:`mgnn.testing.fakecupy`), which refuses every implicit host conversion as CuPy
does.
"""

import contextlib
import pathlib
import re
import shlex
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SETUP_BLOCKS = ['python -m pip install -e ".[dev]"\npython -m pytest\n']


def blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)


@contextlib.contextmanager
def cupy_or_stand_in(code):
    """``cupy`` for a block that imports it: CuPy with CUDA, else the CPU stand-in."""
    from mgnn.backend import gpu_available

    if "import cupy" not in code or gpu_available():
        yield
        return
    from mgnn.testing import fakecupy

    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = fakecupy
    try:
        yield
    finally:
        if saved is None:
            del sys.modules["cupy"]
        else:  # pragma: no cover - CuPy installed without a device
            sys.modules["cupy"] = saved


def test_every_readme_block_runs(tmp_path, monkeypatch, capsys):
    from mgnn.cli import main

    monkeypatch.chdir(tmp_path)
    ns = {}
    seen = {"python": 0, "toml": 0, "console": 0}
    for lang, code in blocks():
        if lang == "python":
            with cupy_or_stand_in(code):
                exec(compile(code, f"README python block {seen['python']}", "exec"), ns)
        elif lang == "toml":
            (tmp_path / "run.toml").write_text(code)
        elif lang == "console":
            for line in code.splitlines():
                assert line.startswith("$ mgnn "), line
                assert main(shlex.split(line[len("$ mgnn "):])) == 0, line
        else:
            assert code in SETUP_BLOCKS, f"untested README block:\n{code}"
        seen[lang] = seen.get(lang, 0) + 1
    assert seen["python"] >= 6 and seen["toml"] == 1 and seen["console"] == 1
    # what the blocks promise
    assert ns["res"].success
    assert ns["obj"].accuracy(ns["res"].x, ns["data"].X_val, ns["data"].Y_val) > 0.9
    assert np.array_equal(ns["rest"].x, ns["full"].x)
    assert ns["part"].checkpoint.endswith("ckpt-000000100.npz")
    assert np.array_equal(ns["theta2"], ns["res"].x)
    assert (tmp_path / "out" / "network.npz").exists()
    assert (tmp_path / "out2" / "summary.json").exists()
    assert (tmp_path / "deep.npz").exists()
    # the GPU block: nested iteration and RMTR on device arrays
    assert type(ns["gtr"].x).__module__.split(".")[0] in ("cupy", "mgnn")
    assert ns["gni"].success and ns["gtr"].fun <= ns["gni"].fun
    assert ns["gobj"].accuracy(ns["gtr"].x, ns["gdata"].X_val, ns["gdata"].Y_val) > 0.8
