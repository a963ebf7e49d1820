import ast
import subprocess
import sys
from pathlib import Path

from sedlib.data import get_fashion_mnist
from sedlib.data.get_fashion_mnist import FASHION_MNIST_FILES, main


def fill(directory):
    directory.mkdir(parents=True, exist_ok=True)
    for stem in FASHION_MNIST_FILES:
        (directory / f"{stem}.gz").write_bytes(b"")


def test_missing_files_without_root_stop_with_the_commands_that_get_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(get_fashion_mnist, "_can_apt", lambda: False)
    fill(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert main([tmp_path / "empty", tmp_path / "partial"]) == 1
    message = capsys.readouterr().err
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "empty") in message and str(tmp_path / "partial") in message
    assert "data/fashion-mnist" in message and "t10k-labels-idx1-ubyte.gz" in message


def test_found_files_are_reported_and_nothing_is_installed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(get_fashion_mnist.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    fill(tmp_path / "second")
    assert main([tmp_path / "first", tmp_path / "second"]) == 0
    assert str(tmp_path / "second") in capsys.readouterr().out


def test_as_root_with_apt_the_package_is_installed(tmp_path, monkeypatch):
    commands = []

    def apt(command, **kwargs):
        commands.append(command)
        if "install" in command:
            fill(tmp_path / "system")

    monkeypatch.setattr(get_fashion_mnist, "_can_apt", lambda: True)
    monkeypatch.setattr(get_fashion_mnist.subprocess, "run", apt)
    assert main([tmp_path / "system"]) == 0
    assert commands[-1][:2] == ["apt-get", "install"] and commands[-1][-1] == "dataset-fashion-mnist"


def test_it_runs_before_the_environment_exists_on_the_standard_library_only():
    source = get_fashion_mnist.__file__
    modules = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(ast.parse(Path(source).read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules
    # as make setup runs it: a script path, no package import
    result = subprocess.run([sys.executable, "-S", source], capture_output=True, text=True)
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr
