"""The one place that maps ``data.dataset`` to its `sedlib.data.datasource.DataSource`.

Example:
    >>> from sedlib.config import load_config
    >>> source = data_source(load_config("params/smoke.yaml"))
    >>> type(source).__name__, source.form, source.corruption
    ('FashionMNISTSource', 'arrays', 'at_cache')
"""

from __future__ import annotations

from sedlib.config import RunConfig
from sedlib.data.datasource import DataSource
from sedlib.data.fashion_mnist import FashionMNISTSource
from sedlib.data.feature_files import FeatureFilesSource
from sedlib.data.folders import FolderSource
from sedlib.data.imagenet import ImageNetSource

DATA_SOURCES: dict[str, type[DataSource]] = {
    source.name: source for source in (FashionMNISTSource, ImageNetSource, FolderSource, FeatureFilesSource)
}
"""Each ``data.dataset`` value (``sedlib.config``'s ``DATASETS``) and its source."""


def data_source(config: RunConfig) -> DataSource:
    """The source of a study's data (``data.dataset``)."""
    return DATA_SOURCES[config.data.dataset](config)
