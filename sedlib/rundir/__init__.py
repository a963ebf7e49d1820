"""The run directory: its declaration, its verified ledger, its lock, and what decides when a stage reruns.

`declaration` (every stage and every file it writes and reads), `directory` (`RunDir`: paths, the content-hash
ledger, variants), `lock` (one runner per directory), `closure` (a stage's code = its notebook's import closure),
`provenance` (what a reader needs to rerun it) and `notebook` (how a notebook opens its run directory). The runner
that executes the stages is `sedlib.run`.
"""
