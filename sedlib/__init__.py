"""sedlib: Scalable Ensemble Diversification (SED) for OOD generalisation and detection.

A small library behind the project's notebooks. It implements the method of

    Rubinstein, Scimeca, Teney, Oh. *Scalable Ensemble Diversification for OOD
    Generalization and Detection*. arXiv:2409.16797, https://arxiv.org/abs/2409.16797

on cached features of a frozen backbone: an ensemble of small heads (`sedlib.ensemble`),
the SED objective (`sedlib.losses`), the pair schedules and training loop (`sedlib.train`),
per-sample OOD scores (`sedlib.scores`), metrics (`sedlib.metrics`) and streamed evaluation
(`sedlib.evaluate`). `python -m sedlib.bench` measures training speed.
"""

from pathlib import Path

__version__ = "0.1.0"

#: The checkout the package lives in (an editable install): params/, notebooks/, runs/, _quarto.yml.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
