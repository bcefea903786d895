"""The learned schedule as a value (`file`: `Schedule`, schedule.json, json-flat) and what uses it: its replay in
training (`sampler`), in the user's own loop (`policy`: `SchedulePolicy`; `dali`), its figure (`plot`) and the exports
(`export`, with PBA's file in `pba` and Albumentations' in `albumentations`).
Importing this package imports none of its modules."""
