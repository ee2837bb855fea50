"""The README's first two commands are the contract with a new user; CI must run the second verbatim."""

import re
from pathlib import Path


def _first_commands():
    text = Path("README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_starts_with_install_and_test_commands():
    cmds = _first_commands()
    assert len(cmds) == 2
    install_run, install_test = cmds
    assert "sae-ooc pipeline --config configs/default.yaml" in install_run
    assert "pytest" in install_test and ".[test]" in install_test
    for c in cmds:  # any other torch spec would pull a multi-GB CUDA build
        assert re.findall(r"torch[=<>!~]=?[\w.]*", c) == ["torch==2.13.0"]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = Path(".ci/run").read_text()
    assert _first_commands()[1] in ci.splitlines()


def test_pyproject_pins_the_cpu_torch():
    assert '"torch==2.13.0"' in Path("pyproject.toml").read_text()
