"""K2.6 vision: image preprocessing, the MoonViT-3d tower, the patch merger and the projector.

Modules (imported on demand so that budgeting an image never loads torch):

* :mod:`~kimidoc.vision.budget` -- ``image_tokens(width, height)``: tokens an image costs, from its size.
* :mod:`~kimidoc.vision.images` -- ``decode_image``: decode upright RGB, or ``ImageError`` naming the file.
* :mod:`~kimidoc.vision.preprocess` -- ``preprocess(images) -> VisionInputs`` (pixel patches, ``grid_thw``,
  ``tokens_per_image``) and ``preprocess_frames`` for chunks of up to 4 video frames.
* :mod:`~kimidoc.vision.placeholders` -- ``image_placeholder(n)``, ``expand_media_pads``, ``scatter_media``.
* :mod:`~kimidoc.vision.tower` / :mod:`~kimidoc.vision.projector` -- the networks, official tensor names.
* :mod:`~kimidoc.vision.multimodal` -- ``KimiK25`` (text model + tower + projector) and ``load_multimodal``,
  which loads a checkpoint with its tower (the text runtime's loader, given ``build_multimodal`` to wrap it).
"""
