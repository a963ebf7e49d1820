"""Evaluation: scores, metrics, protocols, streamed evaluation, detectors and the bootstrap behind verdicts.

`scores` (per-sample scores; each documents its direction: higher = more OOD), `metrics` (accuracy, ECE, AUROC,
FPR@95, AUPR), `protocols` (the two protocols for class subsets such as ImageNet-A / -R), `evaluate` (one split
through one ensemble), `detectors` (the post-hoc OOD detectors: MSP, energy, KNN, ViM, ...), `bootstrap`
(intervals over seeds and test images).
"""
