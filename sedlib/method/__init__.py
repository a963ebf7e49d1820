"""The method: SED's ensemble of heads, its objective, optimisers, pair schedules and training loop.

`ensemble` (M heads as one batched module), `losses` (cross-entropy and the A2D / DivDis pair repulsion with
hardness weights), `optim` (batched AdamW / SGD), `schedules` (which pairs a step trains), `train` (the loop),
`step_cost` (the cost of a step against M) and `published` (the authors' four training runs as settings).
Nothing here knows about run directories, notebooks or the report.
"""
