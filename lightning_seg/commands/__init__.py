"""Subcommands beyond Lightning's fit/validate/test/predict, one module each (methods of ``SegTrainer``)."""
