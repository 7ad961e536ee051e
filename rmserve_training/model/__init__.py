"""The reward model: a backbone plus a scalar head, where backbones come from, how their texts
are tokenised, LoRA, memory options and mixed precision.

May import: ``rmserve`` and the ``rmserve_training`` packages below it.
"""
