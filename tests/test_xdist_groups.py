"""`make test` runs the suite in two pytest-xdist workers (``--dist loadgroup``): the tests that share a costly
fixture must land in one worker, or each worker builds it again (the golden sweep, the trained teacher)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import xdist_group


def _item(*fixtures: str, module_scoped: bool = False):
    defs = {name: [SimpleNamespace(scope="module" if module_scoped else "function")] for name in fixtures}
    return SimpleNamespace(fixturenames=list(fixtures), _fixtureinfo=SimpleNamespace(name2fixturedefs=defs),
                           module=SimpleNamespace(__name__="test_somewhere"))


def test_costly_fixtures_name_the_group():
    assert xdist_group(_item("tmp_path", "golden_sweep", "trained_teacher")) == "session_ray"
    assert xdist_group(_item("local_ray")) == "session_ray"
    assert xdist_group(_item("trained_teacher", "tmp_path")) == "trained_teacher"
    assert xdist_group(_item("sweep", module_scoped=True)) == "test_somewhere"  # its module's own fixture
    assert xdist_group(_item("tmp_path", "capsys")) is None


def test_a_group_runs_in_one_worker_with_the_installed_pytest(tmp_path):
    """pytest-xdist groups by renaming node ids; a pytest that no longer reads the new id (9.2) silently splits
    the groups. Eight grouped tests and eight free ones: the grouped ones all report the same worker."""
    pytest.importorskip("xdist", reason="pytest-xdist is a dev dependency: `make install`")
    (tmp_path / "conftest.py").write_text(
        "import pytest\n\n"
        "@pytest.hookimpl(tryfirst=True)\n"
        "def pytest_collection_modifyitems(config, items):\n"
        "    for item in items:\n"
        "        if item.name.startswith('test_grouped'):\n"
        "            item.add_marker(pytest.mark.xdist_group('shared'))\n")
    (tmp_path / "test_some.py").write_text(
        "import os\nimport pytest\n\n"
        "@pytest.mark.parametrize('i', range(8))\n"
        "def test_grouped(i):\n"
        "    with open('workers.txt', 'a') as f:\n"
        "        f.write(os.environ['PYTEST_XDIST_WORKER'] + '\\n')\n\n"
        "@pytest.mark.parametrize('i', range(8))\n"
        "def test_free(i):\n"
        "    pass\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist",
                           "loadgroup", "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    workers = (tmp_path / "workers.txt").read_text().split()
    assert len(workers) == 8 and len(set(workers)) == 1, workers
