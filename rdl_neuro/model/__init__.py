"""Networks as RSA models: recording named layers, their RDMs, small reference networks.

==============================  ===============================================
``rdl_neuro.model.recorder``    ``LayerRecorder``, ``available_layers``, ``resolve_layers``
``rdl_neuro.model.layer_rdms``  ``layer_rdms``: a model's layer RDMs over a stimulus set
``rdl_neuro.model.networks``    ``build_model`` (MLP / CNN from a config), ``RDLNet``
``rdl_neuro.model.fitted``      weighted models: ``fit_weights``, ``solve_weights``, ``fit_weighted_model``, ``predict_weighted``
``rdl_neuro.model.rsa_models``  ``FixedModel``, ``WeightedModel``, ``SelectModel``, ``InterpolateModel``, ``fit_model``
==============================  ===============================================
"""
from rdl_neuro.model.fitted import FIT_METHODS, fit_weighted_model, fit_weights, predict_weighted, solve_weights
from rdl_neuro.model.layer_rdms import layer_rdms
from rdl_neuro.model.networks import MODEL_TYPES, RDLNet, build_model
from rdl_neuro.model.recorder import LayerRecorder, available_layers, resolve_layers
from rdl_neuro.model.rsa_models import (FITTERS, FixedModel, InterpolateModel, RSAModel, SelectModel, WeightedModel,
                                        as_fitter, as_models, fit_model)

__all__ = ["layer_rdms", "MODEL_TYPES", "RDLNet", "build_model", "LayerRecorder", "available_layers",
           "resolve_layers", "FIT_METHODS", "fit_weights", "fit_weighted_model", "predict_weighted",
           "solve_weights", "FITTERS", "RSAModel", "FixedModel", "WeightedModel", "SelectModel", "InterpolateModel",
           "as_fitter", "as_models", "fit_model"]
