"""Ray Tune glue: sweep files, search spaces, the Tuner and the best config (``sweep``), and the
per-epoch report a fine-tuning trial sends back (``report``). Ray is imported only when used."""

from pixelbert.tune.report import epoch_reporter, resume_point
from pixelbert.tune.sweep import (
    Sweep,
    base_config,
    best_config,
    load_sweep,
    max_epochs,
    run_sweep,
    search_space,
    trial_config,
    trial_resources,
    trial_run_dir,
    unfinished_trials,
    write_best_config,
)

__all__ = ["Sweep", "base_config", "best_config", "epoch_reporter", "load_sweep", "max_epochs", "resume_point",
           "run_sweep", "search_space", "trial_config", "trial_resources", "trial_run_dir", "unfinished_trials",
           "write_best_config"]
