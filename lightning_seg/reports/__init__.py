"""Pictures and tables of a run: the class palette (:mod:`.palette`), drawing masks over images
(:mod:`.drawing`), the figures (:mod:`.figures`, :mod:`.threshold_curves`), the best and worst images
(:mod:`.image_ranking`) and publishing to the run folder and loggers (:mod:`.publish`). Functions of data in,
files out: no callbacks here, and nothing that changes a trainer or a model."""
