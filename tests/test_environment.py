from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_conda_environment_pins_the_same_packages_as_requirements():
    requirements = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    assert "python=3.11" in environment["dependencies"]
    assert [entry for entry in pip_section if not entry.startswith("-e")] == requirements
    assert all("==" in line for line in requirements)
