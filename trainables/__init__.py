"""Models, the one training loop (:mod:`trainables.loop`) and its task kinds, and checkpoint
files (:mod:`trainables.checkpoint`); nothing here knows Ray (the Ray trial is in :mod:`search.trial`)."""
