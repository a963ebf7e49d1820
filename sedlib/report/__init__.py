"""The report: the executed notebooks rendered with Quarto (or pandoc), figures embedded, results published.

`render` (``python -m sedlib.report RUN_DIR``), `embed` (figures and tables into the article), `publish` (headline
results copied, verified, into ``results/<run>/``) and `quarto_root` (the guard of ``quarto render`` at the root).
"""
