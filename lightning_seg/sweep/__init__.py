"""``lightning-seg sweep``: the sweep file (:mod:`.spec`), one ``fit`` process per trial with resume
(:mod:`.runner`) and the ranked table (:mod:`.table`)."""
