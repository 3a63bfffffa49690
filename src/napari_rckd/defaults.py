"""What runs and what is written when the user does not say: one place, cheap to import.

The command line reads these while building ``--help`` (so this module imports nothing heavy);
the engine (``inference.analysis``) and the widgets use the same names.
"""

# The nuclei model that runs when none is chosen: "auto" picks one for the device
# (`napari_rckd.inference.nuclei_choice`: the built-in teacher on CPU, the student on a GPU).
DEFAULT_NUCLEI = "auto"
# Appended to a network teacher's spec: its nuclear probability averaged with the classical
# detector's (`builtin` is "learned" + this; docs/teachers.md).
PRIOR_SUFFIX = "+classical"
# Result kinds an analysis computes, and the files it can export.
KINDS = ("nuclei", "subtype", "region")
EXPORTS = ("geojson", "csv", "ome-tiff")
DEFAULT_EXPORTS = ("geojson", "csv")
# Classifier heads (ModelConfig.head) and the one stage 2 trains when none is named.
HEADS = ("last", "pyramid")
STAGE2_HEAD = "pyramid"
# Dense decoders (ModelConfig.decoder): 64 channels at every level, or the encoder's own widths
# up to 64 (`models.assembly.decoder_widths`). "standard" is what older checkpoints hold.
DECODERS = ("standard", "light")
# Stage 2's learning-rate scale for a backbone that starts pretrained (1: like the head).
PRETRAINED_BACKBONE_LR = 1.0
# The learned nuclei teacher's recipe (`training.recipes.teacher`). A plain ResNet-10 (tiered stem)
# trains reliably from scratch, has stride-2 features for pixel-precise contours, and ran 2.8x
# faster per training step than CSAT on the 2-core CPU. It works at 40x, the resolution the
# nuclei were outlined at: at 0.5 µm/px touching nuclei lose the pixel between them (ground
# truth down- and up-sampled keeps AJI 0.91 on MoNuSeg); left out of training, the 40x images
# of CPM-15 scored about +0.045 Dice, AJI and PQ at 0.25 and the 20x ones the same as at 0.5
# (two seeds each, docs/teachers.md).
TEACHER_BACKBONE = "resnet10t"
TEACHER_MPP = 0.25
# Its optimizer steps: 2,400 rather than 800 lifted MoNuSeg, left out of training, from AJI 0.41
# to 0.45 (0.46 to 0.48 with the classical half), and CPM-15 and CryoNuSeg held out lost no
# metric by more than 0.01 (docs/teachers.md). About 1.5 hours alone on a 2-core CPU.
TEACHER_STEPS = 2400
# Training length of `pretrain` and `finetune` when neither --steps nor --epochs is given: a
# model worth using after about ten minutes of training on a quiet 2-core CPU, not the best one
# (longer runs do better). Stage 2: 200 steps of 16 tiles see the 3,200 tiles of the measured
# LC25000 transfer runs (100 steps of 32), which fine-tuned the shipped student to 0.84 balanced
# accuracy (docs/rckd.md); a step there took 1.8 s for 32 tiles of 128 px, so ~2.8 s for 16 of
# 224 px, ~9 minutes in all. Stage 1: 300 steps of 16 tiles, the demo's "full" budget; the
# stage-1 loop ran at ~30 tiles/s at 128 px (docs/performance.md), so ~7 at 256 px, ~11 minutes,
# after the teacher has answered each tile once (slower on a busy machine: 20 s a step was seen
# with five other jobs on the two cores).
PRETRAIN_STEPS = 300
FINETUNE_STEPS = 200
