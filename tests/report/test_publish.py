import pytest

from sedlib.config import load_config
from sedlib.report.publish import publish, published_names
from sedlib.rundir.directory import ArtefactError


def test_published_files_are_the_headline_results():
    names = published_names(load_config("params/default.yaml"))
    assert names[:3] == ["abstract.md", "key_findings.md", "evidence.csv"]
    assert {"summary.png", "sweeps.png", "table1_ood_generalisation.md", "ood_gen.csv"} <= set(names)
    assert not any(name.startswith("published_comparison") for name in names)
    assert "sweeps.md" not in published_names(load_config("params/full_cpu.yaml"))  # full_cpu has no sweeps


@pytest.mark.e2e
def test_publish_copies_the_verified_files(smoke_run, tmp_path):
    config = load_config("params/smoke.yaml")
    written = publish(config, smoke_run, tmp_path / "published")
    assert [path.name for path in written] == published_names(config)
    assert (tmp_path / "published" / "key_findings.md").read_text() == smoke_run.path("key_findings").read_text()
    assert sorted(path.name for path in (tmp_path / "published").iterdir()) == sorted(published_names(config))


@pytest.mark.e2e
def test_publish_refuses_a_file_that_changed_since_it_was_written(smoke_run, tmp_path):
    path = smoke_run.path("abstract")
    original = path.read_text()
    try:
        path.write_text(original + "typed in by hand\n")
        with pytest.raises(ArtefactError, match="abstract.md"):
            publish(load_config("params/smoke.yaml"), smoke_run, tmp_path)
    finally:
        path.write_text(original)
