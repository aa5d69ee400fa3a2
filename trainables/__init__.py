"""Models and the training loop a Ray trial runs (:mod:`trainables.loop`, :mod:`trainables.trial`)."""
