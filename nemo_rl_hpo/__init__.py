"""nemo-rl-hpo: Hydra-based hyperparameter optimization for LLM and RL training."""

__version__ = "0.1.0"
