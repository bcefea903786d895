"""Algorithm 1's engine: the trainer (`trainer`), lambda with its Adam and per-sample draw (`hyperparams`), the round
in a CUDA graph (`graphs`), and what a NaN loss message says (`nonfinite`).
Importing this package imports none of its modules."""
