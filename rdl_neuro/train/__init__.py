"""Training against RDMs: teachers, losses, the Trainer and what it writes.

=====================================  ===========================================
``rdl_neuro.train.teachers``           ``RDMTeacher`` (fixed RDMs over stimulus ids), ``NetworkTeacher``
``rdl_neuro.train.losses``             ``RDLLoss`` and the peers ``KDLoss``, ``RKDLoss``, ``SPLoss``, ``CKALoss``
``rdl_neuro.train.alignment``          ``CKAAlignmentLoss`` (CKA / log-CKA to an RDM's kernel), ``SimilarityLoss`` (Li et al.)
``rdl_neuro.train.control_teachers``   null and reference teachers: permuted, categorical, model, pixel RDMs
``rdl_neuro.train.trainer``            ``Trainer``: loop, weight schedules, history
``rdl_neuro.train.checkpoints``        checkpoint format, safe reading, RNG state
``rdl_neuro.train.probe``              ``RDMProbe`` (student-teacher RDMs), ``HeldOutProbe`` (held-out stimuli and subjects) per epoch
``rdl_neuro.train.seeds``              ``seed_everything``, ``derive_seed``
``rdl_neuro.train.distributed``        torchrun process group, all-gather with gradients
=====================================  ===========================================
"""
from rdl_neuro.train.alignment import CKAAlignmentLoss, SimilarityLoss
from rdl_neuro.train.checkpoints import (CHECKPOINT_KEYS, CheckpointError, CorruptCheckpointWarning,
                                         find_checkpoints, load_checkpoint)
from rdl_neuro.train.losses import CELoss, CKALoss, KDLoss, RDLLoss, RKDLoss, SPLoss, StepOutputs, TransferLoss
from rdl_neuro.train.probe import HeldOutProbe, RDMProbe
from rdl_neuro.train.seeds import derive_seed, seed_everything
from rdl_neuro.train.teachers import NetworkTeacher, RDMTeacher
from rdl_neuro.train.control_teachers import category_teacher, model_teacher, permuted_teacher, pixel_teacher
from rdl_neuro.train.trainer import Schedule, Trainer, linear_warmup

__all__ = ["CHECKPOINT_KEYS", "CheckpointError", "CorruptCheckpointWarning", "find_checkpoints", "load_checkpoint",
           "CELoss", "CKALoss", "KDLoss", "RDLLoss", "RKDLoss", "SPLoss", "StepOutputs", "TransferLoss", "RDMProbe", "HeldOutProbe",
           "derive_seed", "seed_everything", "NetworkTeacher", "RDMTeacher", "Schedule", "Trainer", "linear_warmup",
           "CKAAlignmentLoss", "SimilarityLoss", "category_teacher", "model_teacher", "permuted_teacher", "pixel_teacher"]
