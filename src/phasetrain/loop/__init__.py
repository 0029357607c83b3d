"""The native training loop: `PhaseTransitionTrainer` and the pieces of one update.

- `trainer`: the conductor; reads top to bottom like a hand-written loop.
- `update`: one optimizer update (precision, accumulation, clipping).
- `batches`, `accuracy`: the plumbing between a user's data and the model.
- `evaluation`: the validation pass.
- `rng`: every random stream, captured and replayed for exact resume.
- `interrupts`: the first Ctrl-C/SIGTERM stops the loop cleanly, the second at once.
- `callbacks`: user code at fixed points of the loop.
Everything a run records goes through `phasetrain.run.RunRecorder`.
"""
