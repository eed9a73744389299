"""Can every supported Python on every supported platform install the runtime requirements
from wheels alone? `make check-wheels`; `.ci/run` calls it before the tests.

For each CPython 3.10-3.14 on linux x86_64 and aarch64 (glibc 2.28+), macOS arm64 (11+) and
Windows amd64, one `pip download --only-binary=:all:` of every requirement resolves their
dependencies for that target, so a dependency without a wheel (psutil is native code) fails it
too. Fails naming the package, the Python and the platform; exit 0 when all find wheels.

The index is pip's default (or PIP_INDEX_URL): this machine's own wheel folders and extra
indexes are not what a user gets, so pip's config files and PIP_FIND_LINKS/PIP_EXTRA_INDEX_URL
are ignored. With the index unreachable it is skipped with a message, or fails under CI=true.
Environment markers are evaluated by pip for the running Python, not the target (pip's rule).

    python .ci/check_wheels.py [REQUIREMENT ...] [--python 3.13 ...] [--platform "macOS arm64" ...]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")


def manylinux(arch, newest_glibc=28):
    """pip expands only the legacy manylinux names, so list glibc 2.28 down to 2.17 itself."""
    return [f"manylinux_2_{m}_{arch}" for m in range(newest_glibc, 16, -1)] + [f"manylinux2014_{arch}"]


PLATFORMS = {
    "linux x86_64": manylinux("x86_64"),       # manylinux2014 brings in manylinux2010 and manylinux1
    "linux aarch64": manylinux("aarch64"),
    "macOS arm64": ["macosx_11_0_arm64"],      # pip adds universal2
    "Windows amd64": ["win_amd64"],
}


def pip_env():
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no config file is read
    return env


def pip(*args):
    return subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
                          capture_output=True, text=True, env=pip_env())


def registry_reachable():
    return pip("index", "versions", "pip", "--retries", "0", "--timeout", "15").returncode == 0


def missing_wheel(requirements, python, platform):
    """None if pip finds a wheel for every requirement and dependency; else the one it lacks."""
    tags = [a for tag in PLATFORMS[platform] for a in ("--platform", tag)]
    with tempfile.TemporaryDirectory() as dest:
        out = pip("download", "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
                  *tags, "--dest", dest, "--quiet", "--progress-bar", "off", *requirements)
    if out.returncode == 0:
        return None
    found = re.search(r"satisfies the requirement (\S+)", out.stderr)
    return found.group(1) if found else (out.stderr.strip().splitlines() or ["pip failed"])[-1]


def runtime_requirements():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("requirements", nargs="*", help="default: every line of requirements.txt")
    p.add_argument("--python", action="append", choices=PYTHONS, help="default: all of " + ", ".join(PYTHONS))
    p.add_argument("--platform", action="append", choices=list(PLATFORMS), help="default: all four")
    args = p.parse_args(argv)
    requirements = args.requirements or runtime_requirements()
    targets = [(py, pl) for py in args.python or PYTHONS for pl in args.platform or PLATFORMS]

    if not registry_reachable():
        if os.environ.get("CI") == "true":
            print("check-wheels: failed: the package index is unreachable", file=sys.stderr)
            return 1
        print("check-wheels: skipped: the package index is unreachable (CI=true makes this a failure)")
        return 0
    with ThreadPoolExecutor(max_workers=5) as pool:  # pip waits on the network more than it computes
        results = list(pool.map(lambda t: missing_wheel(requirements, *t), targets))
    failures = [f"check-wheels: no wheel for {lacking} on CPython {py}, {pl}"
                for (py, pl), lacking in zip(targets, results) if lacking]
    for line in failures:
        print(line, file=sys.stderr)
    if not failures:
        print(f"check-wheels: wheels found for {len(requirements)} requirements and their dependencies "
              f"on CPython {', '.join(args.python or PYTHONS)} x {', '.join(args.platform or PLATFORMS)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
