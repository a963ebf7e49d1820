"""One hierarchy of user errors, every class of it in `sedlib.errors` so that the runner finds it by its name."""

import importlib
import pkgutil

import pytest

import sedlib
from sedlib import errors


def every_subclass(cls):
    for subclass in cls.__subclasses__():
        yield subclass
        yield from every_subclass(subclass)


def test_every_user_error_of_the_library_is_defined_in_sedlib_errors():
    for module in pkgutil.walk_packages(sedlib.__path__, "sedlib."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    classes = list(every_subclass(errors.UserError))
    assert len(classes) >= 20
    assert [cls.__qualname__ for cls in classes if cls.__module__ != "sedlib.errors"] == []
    assert all(errors.user_error_class(cls.__name__) is cls for cls in classes)


@pytest.mark.parametrize("name", ["ValueError", "OSError", "KeyError", "is_disk_full", "errno", "annotations"])
def test_other_names_are_not_user_errors(name):
    assert errors.user_error_class(name) is None


def test_the_old_base_classes_still_catch_the_errors():
    assert issubclass(errors.MissingFileError, FileNotFoundError) and issubclass(errors.FolderLayoutError, ValueError)
    assert issubclass(errors.TrainingDivergedError, FloatingPointError) and issubclass(errors.DiskFullError, OSError)


def test_a_full_disk_is_found_among_the_causes():
    assert errors.is_disk_full(OSError(28, "No space left on device"))
    wrapped = RuntimeError("write failed")
    wrapped.__context__ = OSError(28, "No space left on device")
    assert errors.is_disk_full(wrapped)
    assert not errors.is_disk_full(OSError(2, "No such file or directory"))
