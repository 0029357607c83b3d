"""One run: what it records and what it leaves on disk.

- `recorder`: `RunRecorder`, the single owner of a run (metric store, monitors, online watcher,
  streams, checkpoint files, meta); every front end (the trainer, the Lightning and Hugging Face
  callbacks, a hand-written loop) translates its events into it.
- `config`: `RecordingConfig`, every setting written once, checked once, stored in the meta;
  `checks`: the argument checks it and every front end use.
- `history`: `MetricHistory`, the metric store, and `metrics.json`.
- `checkpoints`, `files`, `streams`: checkpoint files, atomic writes, metrics.jsonl/csv/TensorBoard.
- `ownership`, `lock`, `resume_checks`: one run per folder (run ids, `overwrite`), one process per
  folder (`RunLock`), and the checks a resume makes before restoring anything; `folder`:
  `open_run_folder`, those checks in their order at run start.
- `averages`: per-step figures kept on the device and averaged per record.
- `state`, `summary`, `watch`, `distributed`: counters, the summary, online detection, DDP.
"""
