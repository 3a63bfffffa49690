"""Recipes: a user's choices (data, teacher, backbone, budget) -> datasets, model, task, `fit`.

One module per kind of run, each a dataclass of its options and the function that trains by it;
the command line, the Train widget and the shipped recipe build the same dataclasses, so all
train exactly the same way, and a checkpoint's provenance is the recipe (`dataclasses.asdict`)
plus the hashes of the data it read:

- `stage1`: `Stage1Recipe` and `pretrain`, RCKD stage 1 (distil a nuclei teacher into a dense
  student on unlabeled tissue);
- `stage2`: `Stage2Recipe`, `finetune` and `train_stage2`, RCKD stage 2 (fine-tune on labelled
  tiles, regions or masks);
- `teacher`: `TeacherRecipe` and `train_teacher`, a nuclei model trained on ground truth (the
  shipped ``learned`` teacher);
- `common`: what they share (the run folder and slide checks, the schedule, the `FitConfig`
  of a stage, the teacher cache, provenance).

The modules import torch only inside their functions: the command line reads the recipes'
defaults for its flags and still answers a typo before torch loads.
"""
