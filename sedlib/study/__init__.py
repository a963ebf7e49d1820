"""The study's stages: what each notebook computes from a params file and the run directory.

Stage 01 `extract` (features of every planned split, also under torchrun via `distributed`), stage 02 `models`
(train every model of the study, `hardness` for what SED weighted as hard), stage 03 `predictions` (every split
through every model, stored once), stage 04 `detection` (the post-hoc detectors), stage 05 `findings` (claims,
verdicts, abstract), with `tables` (formatting only), `plots`, `input_plots` and `summary` (the generated prose).
`cached` reads the cached splits back; `verdicts` checks committed verdicts against the code.
"""
