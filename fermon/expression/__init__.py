"""Stage 5, expression: face crops in, calibrated class probabilities out.

- :mod:`~fermon.expression.model`: the KE2NT network, the one definition ``fermon`` and ``training`` share;
- :mod:`~fermon.expression.backbones`: fermon's own backbones, registered with timm;
- :mod:`~fermon.expression.vocab`: the canonical class names and the architecture configurations;
- :mod:`~fermon.expression.checkpoint`: the safetensors checkpoint format and the embedded defaults;
- :mod:`~fermon.expression.classify`: :class:`~fermon.expression.classify.ExpressionClassifier`
  (also importable as ``fermon.classify``);
- :mod:`~fermon.expression.images`: still photos through detection, alignment and classification.
"""
