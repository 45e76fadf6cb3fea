"""The one place a ``.ckpt`` is read and checked (:mod:`.read`), its model record made and rebuilt
(:mod:`.record`), a model loaded from it and a deployment bundle written (:mod:`.load`), checkpoint files
written atomically (:mod:`.atomic_io`) and found on disk (:mod:`.files`)."""
