"""Image sources and corruptions of the embedded default run.

`sedlib.data.sources` loads Fashion-MNIST (in-distribution, by split) and the semantic-OOD sets
(`SOURCES`: Animal-MNIST silhouettes, scikit-learn digits) as `ImageSet` objects;
`sedlib.data.corruptions` applies the 15 ImageNet-C corruptions reproducibly per image.

Each dataset a study can name (``data.dataset``) is one `sedlib.data.datasource.DataSource`, which
`sedlib.data.registry.data_source` picks; `sedlib.data.splits` plans a study's splits on it.
"""

from sedlib.data.corruptions import corrupt_images
from sedlib.data.sources import SOURCES, ImageSet, load_animal_mnist, load_digits, load_fashion_mnist

__all__ = ["SOURCES", "ImageSet", "corrupt_images", "load_animal_mnist", "load_digits", "load_fashion_mnist"]
