"""Runners: an experiment's settings validated as a whole (:mod:`.config`), the learned-method runner
(:mod:`.learned`), its self-labelling stage (:mod:`.self_label_stage`), pixel clustering (:mod:`.pixels`),
grids (:mod:`.ablation`) and the records' protocol text (:mod:`.records`)."""
