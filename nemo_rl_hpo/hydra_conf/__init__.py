"""Config files every Hydra app finds once nemo-rl-hpo is installed.

``hydra_plugins.nemo_rl_hpo.search_path`` appends ``pkg://nemo_rl_hpo.hydra_conf`` to Hydra's
search path, so ``hydra/launcher=slurm`` and ``hydra/launcher=local`` work in any app.
"""
