"""Put nemo-rl-hpo's config files (launcher presets) on every Hydra app's search path."""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

CONFIG_PACKAGE = "pkg://nemo_rl_hpo.hydra_conf"


class NemoRLHPOSearchPathPlugin(SearchPathPlugin):
    """Appended, not prepended: an app's own ``hydra/launcher/slurm.yaml`` wins over ours."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="nemo-rl-hpo", path=CONFIG_PACKAGE)
