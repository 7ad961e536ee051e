"""The training loop and what it needs: settings-derived inputs, the Bradley–Terry loss,
optimiser, steps, tokenised sets, progress, torch.distributed and checkpoints.

May import: ``rmserve`` and the ``rmserve_training`` packages below it.
"""
