"""A run around its data flow: `session` (start_run: processes, device, threads, seeds), the run folder's life
(`folder`) and its lock (`lock`), the graceful stop on signals (`stop`), its messages and metrics sinks (`log`,
`tensorboard`), where it ran (`environment`), checkpoints (`checkpoint`) and the process group (`distributed`).
Importing this package imports none of its modules."""
