"""The 15 augmentation ops and everything that applies them: the op table (`ops`), their Pillow (`pil`), static
(`static`, `static_triton`) and DALI (`dali_ops`) implementations, the search space (`space`: lambda <-> 30 slots),
PBA's per-sample policy (`policy`, `pba_draw`) and what a pipeline asks a sampler (`sampler`), the reference code's
level tables (`levels`), and the hand-made baselines (`baselines`) with their command-line arms (`arms`).
Importing this package imports none of its modules."""
