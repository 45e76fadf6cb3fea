"""The LightningModule (:mod:`.module`), the path after training it shares with the commands
(:mod:`.evaluation`), what its stages leave for the run's records (:mod:`.results`), how its net is built
(:mod:`.net_builder`), its optimizers (:mod:`.optimizers`) and learning-rate schedules (:mod:`.schedulers`)."""
