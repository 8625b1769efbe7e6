"""The built wheel works on its own: grammar and stdlib inside the package, console script.

Builds the wheel with `pip wheel` (hatchling comes from PyPI), installs it with
`--no-deps` into a fresh venv that borrows this environment's packages through a .pth
file (no torch reinstall), and uses it from another folder, so that nothing can come
from the checkout. Skipped only when the wheel cannot be built for lack of network.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NETWORK_ERRORS = ("No matching distribution found", "Could not find a version that satisfies",
                  "NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                  "ConnectTimeoutError", "ProxyError")

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                 "-w", str(out), str(ROOT)], cwd=out)
    if proc.returncode != 0:
        log = proc.stdout + proc.stderr
        if any(marker in log for marker in NETWORK_ERRORS):
            pytest.skip("cannot build the wheel: no network to fetch the build backend (hatchling) from PyPI")
        pytest.fail(f"pip wheel failed:\n{log[-4000:]}")
    wheels = list(out.glob("kmr_dsl-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh venv holding only the wheel; dependencies come from this environment."""
    home = tmp_path_factory.mktemp("venv")
    env_dir = home / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=home).stdout.strip())
    borrowed = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (purelib / "_kmr_borrowed_env.pth").write_text("\n".join(dict.fromkeys(borrowed)) + "\n", encoding="utf-8")
    proc = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                 "--disable-pip-version-check", "--quiet", str(wheel)], cwd=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    work = home / "elsewhere"                    # not the checkout: nothing leaks in from cwd
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["KMR_CACHE_DIR"] = str(home / "cache")
    return {"python": python, "kmr": bindir / "kmr", "purelib": purelib, "cwd": work, "env": env}


def test_wheel_ships_grammar_and_stdlib(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"kmr_dsl/__init__.py", "kmr_dsl/grammar/kmr.lark", "kmr_dsl/stdlib/std.kmr",
            "kmr_dsl/stdlib/rules.kmr", "kmr_dsl/stdlib/meters.kmr", "kmr_dsl/fmt/__init__.py"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_resources_resolve_inside_the_installed_package(installed):
    proc = _run([str(installed["python"]), "-c",
                 "import kmr_dsl, kmr_dsl.resources as r; print(kmr_dsl.__file__); "
                 "print(r.grammar_path()); print(r.stdlib_dir())"],
                cwd=installed["cwd"], env=installed["env"])
    assert proc.returncode == 0, proc.stderr
    package = (installed["purelib"] / "kmr_dsl").resolve()
    init, grammar, stdlib = (Path(line).resolve() for line in proc.stdout.split())
    assert init == package / "__init__.py"
    assert grammar == package / "grammar" / "kmr.lark" and grammar.is_file()
    assert stdlib == package / "stdlib" and (stdlib / "std.kmr").is_file()


def test_installed_package_parses_its_stdlib(installed):
    script = ("from kmr_dsl.parse import parse; from kmr_dsl.resources import stdlib_dir\n"
              "files = sorted(stdlib_dir().glob('*.kmr'))\n"
              "for f in files:\n"
              "    program, diags = parse(f.read_text(encoding='utf-8'), str(f))\n"
              "    assert not diags and program.decls, (f, diags)\n"
              "print(len(files))\n")
    proc = _run([str(installed["python"]), "-c", script], cwd=installed["cwd"], env=installed["env"])
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 3


def test_console_script(installed):
    from kmr_dsl import __version__

    proc = _run([str(installed["kmr"]), "--version"], cwd=installed["cwd"], env=installed["env"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"kmr {__version__}"
    program = installed["cwd"] / "uses_std.kmr"
    program.write_text('import "std"\n\nknob a : bool\n', encoding="utf-8")
    proc = _run([str(installed["kmr"]), "check", "--no-verify", program.name], cwd=installed["cwd"],
                env=installed["env"])
    assert proc.returncode == 0, proc.stdout + proc.stderr      # `import "std"` found in the wheel
    assert "Traceback" not in proc.stderr
