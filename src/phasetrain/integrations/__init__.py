"""Optional framework integrations; import the one you use (each needs its extra installed).

- `phasetrain.integrations.lightning.PhaseTransitionCallback` (pip install 'phasetrain[lightning]')
- `phasetrain.integrations.transformers.PhaseTransitionTrainerCallback` (pip install 'phasetrain[transformers]')

Importing this package imports neither framework.
"""
